"""Our T5 computes the same function as Hugging Face's PyTorch T5.

The reference outputs in tests/testdata/hf_t5_1_{0,1}_tiny/ were recorded by
scripts/make_hf_reference.py with `transformers` (PyTorch) from random tiny
models; here they are loaded through our safetensors loader (no torch).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TESTDATA
from prompt_tuning import checkpoints
from prompt_tuning.checkpoints import hf
from prompt_tuning.models import Transformer
from prompt_tuning.models.model import EncoderDecoderModel

MODELS = ["hf_t5_1_0_tiny", "hf_t5_1_1_tiny"]


def _load(name):
  config, params = hf.load_hf_t5(TESTDATA / name)
  model = EncoderDecoderModel(Transformer(config))
  params = hf.load_hf_t5(TESTDATA / name, model.param_shapes())[1]
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


@pytest.mark.parametrize("name", MODELS)
def test_loader_tree_spec_is_the_models_tree(name):
  # checkpoints.t5_param_shapes is written independently of the model; the
  # two must agree name for name and shape for shape.
  config, _ = hf.load_hf_t5(TESTDATA / name)
  from_model = EncoderDecoderModel(Transformer(config)).param_shapes()
  spec = checkpoints.t5_param_shapes(config)
  flat_model = checkpoints.flatten_params(from_model)
  flat_spec = checkpoints.flatten_params(spec)
  assert sorted(flat_model) == sorted(flat_spec)
  for key, value in flat_model.items():
    assert tuple(value.shape) == tuple(flat_spec[key].shape), key
