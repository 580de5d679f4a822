"""`T5Config.remat_policy`: the same loss, gradients and decodes under every
policy, the same parameter tree, and less activation memory when it
recomputes."""

import contextlib
import dataclasses
import io
import re

import jax
import jax.ad_checkpoint  # pylint: disable=unused-import
import numpy as np
import pytest

from conftest import initial_params
from prompt_tuning.models import T5Config
from prompt_tuning.models import config as config_lib
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import deep
from prompt_tuning.prompts.models import PromptTransformer

CONFIG = T5Config(vocab_size=128, emb_dim=32, num_heads=2, head_dim=8,
                  mlp_dim=48, num_encoder_layers=2, num_decoder_layers=2,
                  dropout_rate=0.1)


def _batch(batch=3, length=12, targets=5, seed=0):
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, 128, (batch, length)).astype(np.int32)
  enc[0, 8:] = 0  # Padding in one row.
  tgt = rng.integers(2, 128, (batch, targets)).astype(np.int32)
  tgt[1, 3:] = 0
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt,
          "decoder_loss_weights": (tgt > 0).astype(np.int32)}


def _models(policy, kind):
  config = dataclasses.replace(CONFIG, remat_policy=policy)
  if kind == "prompt":
    module = PromptTransformer(config, prompt_length=4)
  else:  # P-Tuning v2: per-layer keys/values through every layer.
    module = deep.DeepPromptTransformer(config, prefix_length=3,
                                         decoder_prompt=True)
  return EncoderDecoderModel(module)


def _loss_and_grads(model, params, batch):
  def loss(p):
    return model.loss_fn(p, batch, jax.random.PRNGKey(7))[0]
  return jax.jit(jax.value_and_grad(loss))(params)


# Every policy once, each kind of prompt at least once (each case ~20 s).
CASES = [("full", "prompt"), ("dots", "deep"), ("dots_all", "prompt")]
assert {p for p, _ in CASES} | {"none"} == set(config_lib.REMAT_POLICIES)


@pytest.mark.parametrize("policy, kind", CASES)
def test_every_policy_gives_the_same_loss_gradients_and_decode(policy, kind):
  reference = _models("none", kind)
  model = _models(policy, kind)
  params = initial_params(reference)
  assert jax.tree_util.tree_structure(initial_params(model)) == (
      jax.tree_util.tree_structure(params))
  batch = _batch()
  loss, grads = _loss_and_grads(reference, params, batch)
  remat_loss, remat_grads = _loss_and_grads(model, params, batch)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  flat = jax.tree_util.tree_leaves_with_path(grads)
  remat_flat = dict(jax.tree_util.tree_leaves_with_path(remat_grads))
  for path, g in flat:  # Every leaf, the frozen weights' gradients too.
    np.testing.assert_allclose(remat_flat[path], g, rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  decoded = reference.predict_batch(params, batch, max_decode_length=4)[0]
  np.testing.assert_array_equal(
      model.predict_batch(params, batch, max_decode_length=4)[0], decoded)


def _residual_bytes(fn, *args) -> int:
  """Bytes of what the backward pass of `fn` keeps from its forward pass
  (`jax.ad_checkpoint.print_saved_residuals`, one `f32[8,80,64] ...` line
  per saved array), independent of a backend's memory scheduling."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    jax.ad_checkpoint.print_saved_residuals(fn, *args)
  total = 0
  for kind, bits, shape in re.findall(r"^([a-z]+)(\d+)\[([\d,]*)\]",
                                      out.getvalue(), re.MULTILINE):
    del kind  # f32, bf16, s32, u32, pred (no bits: skipped, tiny).
    size = int(np.prod([int(d) for d in shape.split(",") if d]))
    total += size * int(bits) // 8
  return total


def test_remat_keeps_fewer_activations_for_the_prompt_gradient():
  config = dataclasses.replace(CONFIG, emb_dim=64, mlp_dim=256,
                               num_encoder_layers=4, num_decoder_layers=4)
  batch = _batch(batch=8, length=64, targets=8)
  kept = {}
  for policy in ("none", "full", "dots"):
    model = EncoderDecoderModel(PromptTransformer(
        dataclasses.replace(config, remat_policy=policy), prompt_length=16))
    params = initial_params(model)

    def loss(prompt, params=params, model=model):
      # Prompt tuning's gradient: the prompt's only, through every layer.
      full = {**params, "prompt": prompt}
      return model.loss_fn(full, batch, jax.random.PRNGKey(0))[0]
    kept[policy] = _residual_bytes(loss, params["prompt"])
  # Measured: none 40.4 MB, dots 11.2 MB, full 3.9 MB.
  assert kept["full"] < 0.2 * kept["none"], kept
  assert kept["full"] < kept["dots"] < 0.5 * kept["none"], kept


def test_an_unknown_policy_is_refused_with_the_choices():
  with pytest.raises(ValueError, match="remat_policy 'some'.*'full'"):
    T5Config(remat_policy="some")
