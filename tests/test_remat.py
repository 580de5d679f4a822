"""`T5Config.remat_policy`: the same loss, gradients and decodes with each
path through the rematerialised layers, the same parameter tree, and less
activation memory when it recomputes."""

import contextlib
import io
import re

import jax
import jax.ad_checkpoint  # pylint: disable=unused-import
import numpy as np
import pytest

from helpers import assert_same_loss_and_gradients
from helpers import initial_params
from helpers import tiny_model
from helpers import training_batch
from prompt_tuning.models import T5Config
from prompt_tuning.models import config as config_lib

# One case per path through the rematerialised layers: a deep prompt's
# prefixes enter each remat'd layer as arrays, a soft prompt's as None
# (static). The policies differ only in the JAX policy `nn.remat` gets (what
# it saves; it recomputes the rest): 'full' and 'dots_all' here, 'full' and
# 'dots' in the memory test below. Decoding never rematerialises, whatever
# the prompt: one case decodes. Each layer is rematerialised alike: one of
# each stack suffices.
CASES = [("full", "deep"), ("dots_all", "prompt")]
assert {p for p, _ in CASES} | {"none", "dots"} == set(
    config_lib.REMAT_POLICIES)


@pytest.mark.slow
@pytest.mark.parametrize("policy, kind", CASES)
def test_remat_gives_the_same_loss_gradients_and_decode(policy, kind):
  def model(**overrides):
    return tiny_model(kind, dropout_rate=0.1, num_encoder_layers=1,
                      num_decoder_layers=1, **overrides)
  reference, remat = model(), model(remat_policy=policy)
  params = initial_params(reference)
  batch = training_batch()
  assert_same_loss_and_gradients(reference, remat, params, batch, rtol=1e-6,
                                 grad_rtol=1e-5)
  if kind == "prompt":
    decoded = reference.predict_batch(params, batch, max_decode_length=4)[0]
    np.testing.assert_array_equal(
        remat.predict_batch(params, batch, max_decode_length=4)[0], decoded)


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
  batch = training_batch(batch=8, length=64, targets=8)
  params = initial_params(tiny_model("prompt", prompt_length=16))
  kept = {}
  for policy in ("none", "full", "dots"):
    model = tiny_model("prompt", prompt_length=16, dropout_rate=0.1,
                       remat_policy=policy)

    def loss(prompt, params=params, model=model):
      # Prompt tuning's gradient: the prompt's only, through every layer.
      full = {**params, "prompt": prompt}
      return model.loss_fn(full, batch, jax.random.PRNGKey(0))[0]
    kept[policy] = _residual_bytes(loss, params["prompt"])
  # Measured: none 6.8 MB, dots 1.1 MB, full 0.5 MB.
  assert kept["full"] < 0.2 * kept["none"], kept
  assert kept["full"] < kept["dots"] < 0.5 * kept["none"], kept


def test_an_unknown_policy_is_refused_with_the_choices():
  with pytest.raises(ValueError, match="remat_policy 'some'.*'full'"):
    T5Config(remat_policy="some")
