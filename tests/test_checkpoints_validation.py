"""Tests for the parameter tree spec and the shape check."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

from prompt_tuning import checkpoints
from prompt_tuning.models.config import GATED_GELU, RELU, T5Config

TINY = T5Config(vocab_size=16, emb_dim=4, num_heads=2, head_dim=3, mlp_dim=5,
                num_encoder_layers=1, num_decoder_layers=2,
                mlp_activations=RELU, logits_via_embedding=True,
                relative_attention_num_buckets=6)


def _zeros(shapes):
  return jax.tree.map(lambda s: np.zeros(s.shape, np.float64), shapes)


def test_spec_names_and_shapes():
  flat = checkpoints.flatten_params(checkpoints.t5_param_shapes(TINY))
  assert flat["token_embedder/embedding"].shape == (16, 4)
  assert flat["encoder/relpos_bias/rel_embedding"].shape == (2, 6)
  assert flat["encoder/layers_0/attention/query/kernel"].shape == (4, 6)
  assert flat["decoder/layers_1/encoder_decoder_attention/out/kernel"].shape \
      == (6, 4)
  assert flat["decoder/layers_1/mlp/wi/kernel"].shape == (4, 5)
  assert flat["decoder/layers_1/mlp/wo/kernel"].shape == (5, 4)
  assert "decoder/logits_dense/kernel" not in flat
  # Embedding, 2 relpos, 2 final norms; encoder layers have 2 norms, 4
  # attention kernels, wi, wo; decoder layers 3 norms, 8 kernels, wi, wo.
  assert len(flat) == 1 + 2 + 2 + 8 + 2 * 13

  gated = dataclasses.replace(TINY, mlp_activations=GATED_GELU,
                              logits_via_embedding=False)
  flat = checkpoints.flatten_params(checkpoints.t5_param_shapes(gated))
  assert flat["decoder/logits_dense/kernel"].shape == (4, 16)
  assert "encoder/layers_0/mlp/wi_1/kernel" in flat
  assert "encoder/layers_0/mlp/wi/kernel" not in flat


def test_flatten_roundtrip():
  tree = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
  flat = checkpoints.flatten_params(tree)
  assert flat == {"a/b": 1, "a/c/d": 2, "e": 3}
  assert checkpoints.unflatten_params(flat) == tree


def test_check_casts_to_float32_and_accepts_init_output():
  shapes = checkpoints.t5_param_shapes(TINY)
  # As `jax.eval_shape(model.init, ...)` gives it: wrapped in 'params' and
  # boxed with partitioning metadata.
  boxed = {"params": jax.tree.map(
      lambda s: nn.LogicallyPartitioned(s, ("embed",) * len(s.shape)),
      shapes)}
  params = checkpoints.check_params(boxed, _zeros(shapes), source="test")
  for leaf in jax.tree.leaves(params):
    assert leaf.dtype == np.float32
  # Plain shape tuples work too.
  tuples = jax.tree.map(lambda s: tuple(s.shape), shapes,
                        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
  checkpoints.check_params(tuples, _zeros(shapes), source="test")


def test_check_lists_every_problem():
  shapes = checkpoints.t5_param_shapes(TINY)
  params = _zeros(shapes)
  del params["decoder"]["layers_1"]["self_attention"]["key"]
  params["encoder"]["extra"] = {"kernel": np.zeros((2, 2))}
  params["token_embedder"]["embedding"] = np.zeros((32, 4))
  with pytest.raises(checkpoints.ParamMismatchError) as error:
    checkpoints.check_params(shapes, params, source="ckpt X",
                             expected_source="config Y")
  message = str(error.value)
  assert message.startswith("Parameters from ckpt X do not match config Y:")
  assert ("decoder/layers_1/self_attention/key/kernel: expected [4, 6]"
          in message)
  assert "encoder/extra/kernel: [2, 2]" in message
  assert ("token_embedder/embedding: checkpoint [32, 4], expected [16, 4]"
          in message)
  assert "check vocab_size and emb_dim" in message
