"""The T5 encoder-decoder (T5 1.0 and T5 1.1) in Flax linen.

Parameter names follow T5X/Flaxformer checkpoints (`encoder/layers_0/
attention/query/kernel`, `decoder/logits_dense/kernel`, ...), so a T5X
checkpoint loads as an identity map.

The encoder's token embedding is its own step, `Transformer.embed_inputs`:
the encoder proper (`Encoder`) takes embedded inputs `[b, l, e]` and their
mask `[b, l]`. Prompt modules (`prompt_tuning.prompts`) override that one step
to join trainable vectors to the embedded input.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.models import layers
from prompt_tuning.models import config as config_lib
from prompt_tuning.models.config import T5Config

Array = jax.Array

# `T5Config.remat_policy` -> the `jax.checkpoint` policy of each layer.
_REMAT = {
    "full": None,  # Save nothing but the inputs.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_all": jax.checkpoint_policies.dots_saveable,
}
assert set(_REMAT) | {"none"} == set(config_lib.REMAT_POLICIES)


def _dropout(config: T5Config, x: Array, enable_dropout: bool) -> Array:
  """Dropout of whole channels: `[b, l, e]`, one mask shared by all `l`.

  As T5X/Flaxformer's T5 (`broadcast_dims=(-2,)`): every dropout of a
  `[b, l, e]` activation (embedded inputs, sub-layer outputs, final stack
  outputs) zeroes the same features at every position of an example.
  """
  if not enable_dropout or config.dropout_rate == 0.0:
    return x
  return nn.Dropout(config.dropout_rate, broadcast_dims=(-2,))(
      x, deterministic=False)


def _layer_class(layer: type[nn.Module], config: T5Config, decode: bool,
                 static_argnums: tuple[int, ...]) -> type[nn.Module]:
  """`layer`, rematerialised as `config.remat_policy` says (not in decode).

  `static_argnums` are the positions (self = 0) of the layer's Python
  flags, which must be passed positionally to the rematerialised class.
  """
  if config.remat_policy == "none" or decode:
    return layer
  return nn.remat(layer, policy=_REMAT[config.remat_policy],
                  static_argnums=static_argnums)


def _layer_prefix(config: T5Config, prefixes: Optional[Array], layer: int
                  ) -> tuple[Optional[Array], Optional[Array]]:
  """Layer `layer`'s deep-prompt (key, value), each `[1 or b, p, h, d]`.

  `prefixes` is `[layers, 2, p, h*d]` (shared by the batch) or
  `[layers, 2, b, p, h*d]`; index 0 of the second axis is keys, 1 values.
  """
  if prefixes is None:
    return None, None

  def split(x):  # [(b,) p, h*d] -> [1 or b, p, h, d]
    x = x.reshape(x.shape[:-1] + (config.num_heads, config.head_dim))
    return x if x.ndim == 4 else x[None]
  return split(prefixes[layer, 0]), split(prefixes[layer, 1])


def _check_prefixes(prefixes: Optional[Array], num_layers: int) -> None:
  if prefixes is not None and (prefixes.ndim not in (4, 5) or
                               prefixes.shape[:2] != (num_layers, 2)):
    raise ValueError(f"Deep-prompt prefixes {prefixes.shape} must be "
                     f"[{num_layers}, 2, (b,) p, heads*head_dim].")


class EncoderLayer(nn.Module):
  """Pre-norm self-attention block then pre-norm MLP block."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, mask: Array, bias: Array,
               enable_dropout: bool = False,
               prefix_key: Optional[Array] = None,
               prefix_value: Optional[Array] = None) -> Array:
    """`[b, l, e]` with mask `[b, 1, l, l]` and bias `[1, h, l, l]`.

    `prefix_key`/`prefix_value` `[1 or b, p, h, d]` are optional deep-prompt
    keys/values for the self-attention (see `layers.prepend_prefix`).
    """
    cfg = self.config
    y = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype,
                       name="pre_attention_layer_norm")(x)
    y = layers.MultiHeadDotProductAttention(
        cfg.num_heads, cfg.head_dim, cfg.dtype, cfg.dropout_rate,
        cfg.float32_attention_logits, cfg.attention_layout,
        name="attention")(
            y, y, mask, bias, enable_dropout=enable_dropout,
            prefix_key=prefix_key, prefix_value=prefix_value)
    x = x + _dropout(cfg, y, enable_dropout)
    y = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype,
                       name="pre_mlp_layer_norm")(x)
    y = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dtype,
                        cfg.dropout_rate, name="mlp")(
                            y, enable_dropout=enable_dropout)
    x = x + _dropout(cfg, y, enable_dropout)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  """Causal self-attention, encoder-decoder attention, MLP; all pre-norm."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, encoded: Array, decoder_mask: Optional[Array],
               encoder_decoder_mask: Array, bias: Array,
               enable_dropout: bool = False, decode: bool = False,
               prefix_key: Optional[Array] = None,
               prefix_value: Optional[Array] = None,
               cross_key_value: Optional[tuple[Array, Array]] = None
               ) -> Array:
    """`x` `[b, t, e]`, `encoded` `[b, l, e]`; returns `[b, t, e]`.

    `prefix_key`/`prefix_value` `[1 or b, p, h, d]` are optional deep-prompt
    keys/values for the self-attention only (also in decode mode, where they
    are prepended to the cache at every step); cross-attention is unchanged.
    `cross_key_value` (`[b', h, l, d]` each, see `Decoder`) replaces the
    cross-attention's projections of `encoded`.
    """
    cfg = self.config

    def attention(name):
      return layers.MultiHeadDotProductAttention(
          cfg.num_heads, cfg.head_dim, cfg.dtype, cfg.dropout_rate,
          cfg.float32_attention_logits, cfg.attention_layout, name=name)

    y = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype,
                       name="pre_self_attention_layer_norm")(x)
    y = attention("self_attention")(
        y, y, decoder_mask, bias, enable_dropout=enable_dropout, decode=decode,
        prefix_key=prefix_key, prefix_value=prefix_value)
    x = x + _dropout(cfg, y, enable_dropout)
    y = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype,
                       name="pre_cross_attention_layer_norm")(x)
    y = attention("encoder_decoder_attention")(
        y, encoded, encoder_decoder_mask, None, enable_dropout=enable_dropout,
        key_value=cross_key_value)
    x = x + _dropout(cfg, y, enable_dropout)
    y = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype,
                       name="pre_mlp_layer_norm")(x)
    y = layers.MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dtype,
                        cfg.dropout_rate, name="mlp")(
                            y, enable_dropout=enable_dropout)
    x = x + _dropout(cfg, y, enable_dropout)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Encoder(nn.Module):
  """The T5 encoder stack over already-embedded inputs."""
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, input_mask: Array, *,
               enable_dropout: bool = False,
               prefixes: Optional[Array] = None) -> Array:
    """Encodes `embedded` `[b, l, e]` with `input_mask` `[b, l]` -> `[b, l, e]`.

    Dropout is applied to `embedded` first, i.e. after any prompt was joined.
    `prefixes` `[layers, 2, (b,) p, h*d]` are optional deep-prompt keys and
    values for each layer's self-attention; they add no output positions.
    """
    cfg = self.config
    _check_prefixes(prefixes, cfg.num_encoder_layers)
    length = embedded.shape[1]
    bias = layers.RelativePositionBiases(
        cfg.relative_attention_num_buckets,
        cfg.relative_attention_max_distance, cfg.num_heads, cfg.dtype,
        name="relpos_bias")(length, length, bidirectional=True)
    mask = layers.make_attention_mask(input_mask, input_mask)
    x = _dropout(cfg, embedded.astype(cfg.dtype), enable_dropout)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    layer = _layer_class(EncoderLayer, cfg, False, static_argnums=(4,))
    for i in range(cfg.num_encoder_layers):
      prefix_key, prefix_value = _layer_prefix(cfg, prefixes, i)
      x = layer(cfg, name=f"layers_{i}")(
          x, mask, bias, enable_dropout, prefix_key, prefix_value)
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype,
                       name="encoder_norm")(x)
    return _dropout(cfg, x, enable_dropout)


class Decoder(nn.Module):
  """The T5 decoder stack and output projection."""
  config: T5Config
  token_embedder: nn.Module

  @nn.compact
  def __call__(self,
               encoded: Array,
               encoder_mask: Array,
               decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array] = None,
               *,
               enable_dropout: bool = False,
               decode: bool = False,
               max_decode_length: Optional[int] = None,
               prefixes: Optional[Array] = None,
               cross_key_values: Optional[Sequence[tuple[Array, Array]]] = None
               ) -> Array:
    """Returns logits `[b, t, v]` (float32).

    Args:
      encoded: encoder output `[b, l, e]`.
      encoder_mask: `[b, l]`, 1 at real (non-padding, prompt included)
        encoder positions.
      decoder_input_tokens: `[b, t]`, targets shifted right (start id 0).
      decoder_target_tokens: `[b, t]`; its padding (0) masks decoder
        self-attention. Defaults to all positions real.
      enable_dropout: training mode.
      decode: one step of cached autoregressive decoding (`t == 1`).
      max_decode_length: cache length; required when `decode`.
      prefixes: optional deep-prompt keys/values `[layers, 2, (b,) p, h*d]`
        for each layer's self-attention (cross-attention is unaffected).
      cross_key_values: per layer, the cross-attention's keys and values of
        `encoded`, head-major `[b', h, l, d]` each, computed once per decode
        (`cross_attention_key_values`) instead of at every step; `b'` may
        divide `b` (beams sharing their example's).
    """
    cfg = self.config
    _check_prefixes(prefixes, cfg.num_decoder_layers)
    length = decoder_input_tokens.shape[1]
    if decode:
      if max_decode_length is None:
        raise ValueError("max_decode_length is required when decode=True.")
      bias_length = max_decode_length
      decoder_mask = None  # The attention cache builds its own.
      query_mask = jnp.ones_like(decoder_input_tokens, jnp.float32)
    else:
      bias_length = length
      if decoder_target_tokens is None:
        target_mask = jnp.ones_like(decoder_input_tokens, jnp.float32)
      else:
        target_mask = (decoder_target_tokens > 0).astype(jnp.float32)
      decoder_mask = (layers.make_causal_mask(length) *
                      layers.make_attention_mask(target_mask, target_mask))
      query_mask = target_mask.astype(jnp.float32)
    bias = layers.RelativePositionBiases(
        cfg.relative_attention_num_buckets,
        cfg.relative_attention_max_distance, cfg.num_heads, cfg.dtype,
        name="relpos_bias")(bias_length, bias_length, bidirectional=False)
    # Padded decoder positions may still attend to the encoder (their outputs
    # are ignored); only the encoder padding is masked.
    encoder_decoder_mask = layers.make_attention_mask(
        jnp.ones_like(query_mask), encoder_mask)

    x = self.token_embedder(decoder_input_tokens)
    x = _dropout(cfg, x, enable_dropout)
    layer = _layer_class(DecoderLayer, cfg, decode, static_argnums=(6, 7))
    for i in range(cfg.num_decoder_layers):
      prefix_key, prefix_value = _layer_prefix(cfg, prefixes, i)
      x = layer(cfg, name=f"layers_{i}")(
          x, encoded, decoder_mask, encoder_decoder_mask, bias,
          enable_dropout, decode, prefix_key, prefix_value,
          None if cross_key_values is None else cross_key_values[i])
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.dtype,
                       name="decoder_norm")(x)
    x = _dropout(cfg, x, enable_dropout)
    if cfg.logits_via_embedding:
      logits = self.token_embedder.attend(x) / jnp.sqrt(
          jnp.asarray(cfg.emb_dim, cfg.dtype))
    else:
      logits = layers.Dense(cfg.vocab_size, ("embed", "vocab"), cfg.dtype,
                            name="logits_dense")(x)
    logits = logits.astype(jnp.float32)
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


class Transformer(nn.Module):
  """T5 encoder-decoder with a shared token embedding.

  Methods usable with `module.apply(..., method=...)`:
    `__call__` (teacher-forced logits), `embed_inputs`, `encode`, `decode`.
  """
  config: T5Config

  def trainable_patterns(self) -> tuple[str, ...]:
    """Regexes over parameter names of what this model trains: nothing for
    the plain T5 (a full fine-tune says so with TRAINABLE_PATTERNS); prompt
    models name their prompts (and head)."""
    return ()

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.dtype,
                                       name="token_embedder")
    self.encoder = Encoder(cfg, name="encoder")
    self.decoder = Decoder(cfg, self.token_embedder, name="decoder")

  def embed_inputs(self, encoder_input_tokens: Array,
                   enable_dropout: bool = False,
                   prompt_index: Optional[Array] = None
                   ) -> tuple[Array, Array]:
    """The replaceable input step: tokens `[b, l]` -> (`[b, l', e]`, `[b, l']`).

    The base model embeds the tokens and masks padding (id 0). Prompt models
    override this to join a prompt, returning the longer embedding and mask;
    `prompt_index` `[b]` (int) picks each example's prompt from a bank there.
    """
    del enable_dropout  # Used by prompt variants.
    if prompt_index is not None:
      raise ValueError(
          f"{type(self).__name__} has no prompts, but a prompt_index was "
          "given (e.g. a 'prompt_index' batch feature); use a prompt model "
          "such as prompt_tuning.prompts.PromptTransformer with num_prompts.")
    mask = (encoder_input_tokens > 0).astype(jnp.float32)
    return self.token_embedder(encoder_input_tokens), mask

  def layer_prefixes(self, stack: str,
                     enable_dropout: bool = False) -> Optional[Array]:
    """The replaceable per-layer step: deep-prompt keys/values for `stack`.

    Returns `[layers, 2, p, h*d]` for 'encoder' or 'decoder' self-attention,
    or None (the base model). Deep-prompt models (P-Tuning v2) override it.
    """
    del stack, enable_dropout
    return None

  def encode(self, encoder_input_tokens: Array, *,
             enable_dropout: bool = False,
             prompt_index: Optional[Array] = None) -> tuple[Array, Array]:
    """Returns the encoder output `[b, l', e]` and its mask `[b, l']`."""
    embedded, mask = self.embed_inputs(encoder_input_tokens, enable_dropout,
                                       prompt_index)
    encoded = self.encoder(
        embedded, mask, enable_dropout=enable_dropout,
        prefixes=self.layer_prefixes("encoder", enable_dropout))
    return encoded, mask

  def decode(self,
             encoded: Array,
             encoder_mask: Array,
             decoder_input_tokens: Array,
             decoder_target_tokens: Optional[Array] = None,
             *,
             enable_dropout: bool = False,
             decode: bool = False,
             max_decode_length: Optional[int] = None,
             cross_key_values: Optional[Sequence[tuple[Array, Array]]] = None
             ) -> Array:
    """Decoder logits `[b, t, v]`; see `Decoder.__call__`."""
    return self.decoder(encoded, encoder_mask, decoder_input_tokens,
                        decoder_target_tokens, enable_dropout=enable_dropout,
                        decode=decode, max_decode_length=max_decode_length,
                        prefixes=self.layer_prefixes("decoder",
                                                     enable_dropout),
                        cross_key_values=cross_key_values)

  def __call__(self,
               encoder_input_tokens: Array,
               decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array] = None,
               *,
               enable_dropout: bool = False,
               decode: bool = False,
               max_decode_length: Optional[int] = None,
               prompt_index: Optional[Array] = None) -> Array:
    """Teacher-forced logits `[b, t, v]` for inputs `[b, l]`, targets `[b, t]`.

    `prompt_index` `[b]` (int, optional) is passed to `embed_inputs`.
    """
    encoded, mask = self.encode(encoder_input_tokens,
                                enable_dropout=enable_dropout,
                                prompt_index=prompt_index)
    return self.decode(encoded, mask, decoder_input_tokens,
                       decoder_target_tokens, enable_dropout=enable_dropout,
                       decode=decode, max_decode_length=max_decode_length)


def cross_attention_key_values(config: T5Config, params: Any,
                               encoded: Array) -> list[tuple[Array, Array]]:
  """Each decoder layer's cross-attention keys and values of `encoded`
  `[b, l, e]` (head-major `[b, h, l, d]` each), from the model's `params`: what cached
  decoding computes once per decode instead of at every step."""
  return [layers.project_key_value(
              params["decoder"][f"layers_{i}"]["encoder_decoder_attention"],
              encoded, config.num_heads, config.head_dim, config.dtype)
          for i in range(config.num_decoder_layers)]
