"""Hyper-parameters of a T5 encoder-decoder, named as T5X names them."""

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp

# Activation specs as T5X writes them: one name per input projection `wi_i`,
# multiplied together. ('relu',) is T5 1.0; ('gelu', 'linear') is T5 1.1's
# gated GELU (tanh approximation, as in the original Mesh TensorFlow code).
RELU = ("relu",)
GATED_GELU = ("gelu", "linear")

# What each encoder/decoder layer keeps for the backward pass (`remat_policy`).
# 'none': every activation (T5X's default); 'full': only the layer's inputs,
# the rest recomputed; 'dots': the outputs of its matrix multiplies without a
# batch dimension (projections, MLP), recomputing attention, norms, dropout;
# 'dots_all': every matrix multiply's output, attention's included.
REMAT_POLICIES = ("none", "full", "dots", "dots_all")

# How attention computes its weighted sum of values (`attention_layout`).
# 'head_major' (the default): `bhqk,bkhd->bhqd`, then the heads moved back
# beside each other; XLA's CPU backend runs it 2-4x faster at inference
# than T5X's form (the one matrix multiply it runs slowly), and it is the
# batch-major layout XLA's GPU/TPU backends take without a transpose.
# 't5x': T5X/Flaxformer's `bhqk,bkhd->bqhd` einsum, bit-for-bit the
# original's, for reference checks. The same sum, rounded differently:
# logits agree to 1e-5 relative (`tests/test_fidelity.py`).
ATTENTION_LAYOUTS = ("head_major", "t5x")
DEFAULT_ATTENTION_LAYOUT = "head_major"


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Shape and numerics of a T5 model.

  Attributes:
    vocab_size: rows of the token embedding (32128 for the public T5 models:
      32000 SentencePiece pieces + 100 sentinel ids, padded to 128).
    emb_dim: d_model.
    num_heads: attention heads.
    head_dim: size of each head (d_kv).
    mlp_dim: d_ff, the hidden width of the feed-forward block.
    num_encoder_layers: encoder blocks.
    num_decoder_layers: decoder blocks.
    mlp_activations: one activation per input projection, multiplied
      together; see RELU and GATED_GELU.
    dropout_rate: dropout on embeddings, sub-layer outputs, attention weights
      and the MLP hidden state (only when dropout is enabled).
    logits_via_embedding: tie the output projection to the token embedding
      (T5 1.0); the decoder output is then scaled by emb_dim**-0.5.
    relative_attention_num_buckets: relative position buckets.
    relative_attention_max_distance: distance beyond which positions share a
      bucket.
    layer_norm_epsilon: epsilon of the RMS layer norm.
    dtype: activation (compute) dtype; parameters are created float32
      (a training run may store its frozen ones in FROZEN_DTYPE).
    float32_attention_logits: compute attention softmax in float32 even when
      `dtype` is bfloat16.
    remat_policy: rematerialisation of each layer when differentiated, one
      of REMAT_POLICIES: less activation memory for more compute; the same
      values either way. Decoding is unaffected.
    attention_layout: one of ATTENTION_LAYOUTS: 'head_major' (fastest) or
      't5x' (bit-for-bit T5X's einsums; float-rounding differences apart,
      the same values).
  """

  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  mlp_activations: Sequence[str] = GATED_GELU
  dropout_rate: float = 0.0
  logits_via_embedding: bool = False
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  dtype: Any = jnp.float32
  float32_attention_logits: bool = True
  remat_policy: str = "none"
  attention_layout: str = DEFAULT_ATTENTION_LAYOUT

  def __post_init__(self):
    # Gin and JSON hand us lists; keep the config hashable for jit.
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    if isinstance(self.dtype, str):
      object.__setattr__(self, "dtype", jnp.dtype(self.dtype).type)
    for act in self.mlp_activations:
      if act not in ("relu", "gelu", "gelu_exact", "silu", "linear"):
        raise ValueError(
            f"Unknown MLP activation {act!r} in mlp_activations="
            f"{self.mlp_activations}; use 'relu', 'gelu', 'gelu_exact', "
            "'silu' or 'linear'.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat_policy {self.remat_policy!r}; use one "
                       f"of {REMAT_POLICIES}.")
    if self.attention_layout not in ATTENTION_LAYOUTS:
      raise ValueError(f"Unknown attention_layout {self.attention_layout!r}; "
                       f"use one of {ATTENTION_LAYOUTS} (ATTENTION_LAYOUT in "
                       "the model gin file).")
