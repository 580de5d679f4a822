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

from conftest import assert_same_loss_and_gradients
from conftest import initial_params
from conftest import small_dropout_model
from conftest import training_batch
from prompt_tuning.models import T5Config
from prompt_tuning.models import config as config_lib
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts.models import PromptTransformer

# Every policy once, each kind of prompt at least once (each case ~20 s).
CASES = [("full", "prompt"), ("dots", "deep"), ("dots_all", "prompt")]
assert {p for p, _ in CASES} | {"none"} == set(config_lib.REMAT_POLICIES)


@pytest.mark.slow
@pytest.mark.parametrize("policy, kind", CASES)
def test_every_policy_gives_the_same_loss_gradients_and_decode(policy, kind):
  reference = small_dropout_model(kind)
  model = small_dropout_model(kind, remat_policy=policy)
  params = initial_params(reference)
  batch = training_batch()
  assert_same_loss_and_gradients(reference, model, params, batch, rtol=1e-6,
                                 grad_rtol=1e-5)
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


@pytest.mark.slow
def test_remat_keeps_fewer_activations_for_the_prompt_gradient():
  config = T5Config(vocab_size=128, emb_dim=64, num_heads=2, head_dim=8,
                    mlp_dim=256, num_encoder_layers=4, num_decoder_layers=4,
                    dropout_rate=0.1)
  batch = training_batch(batch=8, length=64, targets=8)
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
