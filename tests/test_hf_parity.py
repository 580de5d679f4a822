"""Our T5 computes the same function as Hugging Face's PyTorch T5.

The reference outputs in tests/testdata/hf_t5_1_{0,1}_tiny/ were recorded by
scripts/make_hf_reference.py with `transformers` (PyTorch) from random tiny
models; here they are read through our checkpoint reader (no torch).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import TESTDATA
from prompt_tuning.checkpoints import sharded
from prompt_tuning.models import Transformer
from prompt_tuning.models.model import EncoderDecoderModel

MODELS = ["hf_t5_1_0_tiny", "hf_t5_1_1_tiny"]


def _load(name):
  with sharded.open_checkpoint(TESTDATA / name) as record:
    model = EncoderDecoderModel(Transformer(record.config))
    record.check(model.param_shapes())
    params = record.read_all()
  reference = dict(np.load(TESTDATA / name / "reference.npz"))
  return model, jax.tree_util.tree_map(jnp.asarray, params), reference


@pytest.mark.parametrize("name", MODELS)
def test_encoder_outputs_and_logits_match(name):
  model, params, ref = _load(name)
  encoded, _ = model.module.apply({"params": params},
                                  ref["encoder_input_tokens"], method="encode")
  real_inputs = (ref["encoder_input_tokens"] > 0)[..., None]
  np.testing.assert_allclose(np.where(real_inputs, encoded, 0),
                             np.where(real_inputs, ref["encoder_outputs"], 0),
                             atol=1e-4)
  logits = model.logits(params, {
      "encoder_input_tokens": ref["encoder_input_tokens"],
      "decoder_input_tokens": ref["decoder_input_tokens"],
      "decoder_target_tokens": ref["decoder_target_tokens"]})
  real = (ref["decoder_target_tokens"] > 0)[..., None]
  diff = np.abs(np.where(real, logits - ref["logits"], 0)).max()
  assert diff <= 1e-4, f"max abs logit difference {diff:.2e}"


@pytest.mark.parametrize("name", MODELS)
def test_greedy_decodes_match_exactly(name):
  model, params, ref = _load(name)
  length = ref["greedy_tokens"].shape[1]
  tokens, _ = jax.jit(model.predict_batch, static_argnames="max_decode_length")(
      params, {"encoder_input_tokens": ref["encoder_input_tokens"]},
      max_decode_length=length)
  np.testing.assert_array_equal(tokens, ref["greedy_tokens"])
