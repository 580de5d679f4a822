"""`T5Config.attention_layout`: 'head_major' (the default) computes
attention's weighted sum in another layout than T5X's. It must give T5X's
layout's values up to float rounding (loss, every gradient, decodes, beams,
deep prompts) with the same parameters, and 't5x' must stay bit-for-bit
T5X's einsum. (`test_fidelity.py`: the same on a pre-trained model.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_same_loss_and_gradients
from helpers import initial_params
from helpers import tiny_model
from helpers import training_batch
from prompt_tuning.models import T5Config
from prompt_tuning.models import config as config_lib
from prompt_tuning.models import layers


def test_the_default_is_head_major_and_unknown_layouts_are_refused():
  assert T5Config().attention_layout == "head_major"
  assert set(config_lib.ATTENTION_LAYOUTS) == {"t5x", "head_major"}
  with pytest.raises(ValueError, match="attention_layout 'bhqd'.*ATTENTION_"):
    T5Config(attention_layout="bhqd")


@pytest.mark.slow
def test_head_major_gives_t5x_values_up_to_rounding():
  # One model reaches every place the layout acts (`layers.weighted_sum`):
  # the deep prompt's prefixes join the self-attention of both stacks, in
  # training and in cached decoding; beams share their example's
  # cross-attention keys/values (the 'bhkd' form). A soft prompt only
  # lengthens the inputs: no other attention path. Greedy decoding runs
  # the same attention as beams; cached decoding against teacher forcing is
  # test_model's and test_deep_prompts' (the values here being T5X's). Every
  # layer is alike: one of each stack suffices.
  def deep(layout):
    return tiny_model("deep", dropout_rate=0.1, num_encoder_layers=1,
                      num_decoder_layers=1, attention_layout=layout)
  reference, model = deep("t5x"), deep("head_major")
  params = initial_params(reference)
  batch = training_batch()
  # With dropout: the same masks are drawn in both layouts.
  assert_same_loss_and_gradients(reference, model, params, batch, rtol=1e-5,
                                 grad_rtol=1e-4)
  tokens, scores = reference.predict_batch(params, batch, max_decode_length=4,
                                           num_decodes=3)
  tokens_hm, scores_hm = model.predict_batch(params, batch,
                                             max_decode_length=4,
                                             num_decodes=3)
  np.testing.assert_array_equal(tokens_hm, tokens)
  np.testing.assert_allclose(scores_hm, scores, rtol=1e-5, atol=1e-5)


def test_the_t5x_layout_is_t5x_s_einsum():
  # The 't5x' path is literally T5X/Flaxformer's `bhqk,bkhd->bqhd`: the
  # same jaxpr as writing that einsum by hand, so the same bits.
  rng = np.random.RandomState(0)
  weights = jnp.asarray(rng.rand(2, 2, 3, 5), jnp.float32)
  value = jnp.asarray(rng.randn(2, 5, 2, 4), jnp.float32)
  t5x = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
  for axes, v in (("bkhd", value), ("bhkd", jnp.swapaxes(value, 1, 2))):
    ours = jax.make_jaxpr(
        lambda w, v, a=axes: layers.weighted_sum(w, v, a, "t5x"))(weights, v)
    by_hand = jax.make_jaxpr(
        lambda w, v, a=axes: jnp.einsum(f"bhqk,{a}->bqhd", w, v))(weights, v)
    assert str(ours) == str(by_hand)
    np.testing.assert_allclose(
        layers.weighted_sum(weights, v, axes, "head_major"), t5x,
        rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="attention layout 'x'"):
    layers.weighted_sum(weights, value, "bkhd", "x")
