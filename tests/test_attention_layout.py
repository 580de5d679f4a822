"""`T5Config.attention_layout`: 'head_major' computes attention's weighted sum
in another layout. It must give T5X's layout's values up to float rounding
(loss, every gradient, decodes, beams, deep prompts), the same parameters,
and leave the default bit-for-bit T5X."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_loss_and_gradients
from conftest import initial_params
from conftest import small_dropout_model
from conftest import training_batch
from prompt_tuning.models import T5Config
from prompt_tuning.models import config as config_lib
from prompt_tuning.models import layers


def test_the_default_is_t5x_and_unknown_layouts_are_refused():
  assert T5Config().attention_layout == "t5x"
  assert set(config_lib.ATTENTION_LAYOUTS) == {"t5x", "head_major"}
  with pytest.raises(ValueError, match="attention_layout 'bhqd'.*ATTENTION_"):
    T5Config(attention_layout="bhqd")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["prompt", "deep"])
def test_head_major_gives_t5x_values_up_to_rounding(kind):
  reference = small_dropout_model(kind)
  model = small_dropout_model(kind, attention_layout="head_major")
  params = initial_params(reference)
  batch = training_batch()
  # With dropout: the same masks are drawn in both layouts.
  assert_same_loss_and_gradients(reference, model, params, batch, rtol=1e-5,
                                 grad_rtol=1e-4)
  np.testing.assert_allclose(model.logits(params, batch),
                             reference.logits(params, batch),
                             rtol=1e-5, atol=1e-5)
  for num_decodes in (1, 3):  # Greedy, then beams sharing cross-attention.
    tokens, scores = reference.predict_batch(
        params, batch, max_decode_length=4, num_decodes=num_decodes)
    tokens_hm, scores_hm = model.predict_batch(
        params, batch, max_decode_length=4, num_decodes=num_decodes)
    np.testing.assert_array_equal(tokens_hm, tokens)
    np.testing.assert_allclose(scores_hm, scores, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_head_major_cached_decoding_matches_teacher_forcing():
  model = small_dropout_model("prompt", attention_layout="head_major")
  params = initial_params(model)
  batch = training_batch()
  tokens, scores = jax.jit(model.predict_batch)(params, batch)
  dec_in = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), tokens[:, :-1]], 1)
  forced = {"encoder_input_tokens": batch["encoder_input_tokens"],
            "decoder_input_tokens": dec_in, "decoder_target_tokens": tokens}
  np.testing.assert_allclose(model.score_batch(params, forced), scores,
                             atol=1e-4)


def test_the_t5x_layout_is_t5x_s_einsum():
  # The default path is literally T5X/Flaxformer's `bhqk,bkhd->bqhd`: the
  # same jaxpr as writing that einsum by hand, so the same bits.
  rng = np.random.RandomState(0)
  weights = jnp.asarray(rng.rand(2, 2, 3, 5), jnp.float32)
  value = jnp.asarray(rng.randn(2, 5, 2, 4), jnp.float32)
  t5x = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
  for axes, v in (("bkhd", value), ("bhkd", jnp.swapaxes(value, 1, 2))):
    ours = jax.make_jaxpr(lambda w, v, a=axes: layers.weighted_sum(w, v, a))(
        weights, v)
    by_hand = jax.make_jaxpr(
        lambda w, v, a=axes: jnp.einsum(f"bhqk,{a}->bqhd", w, v))(weights, v)
    assert str(ours) == str(by_hand)
    np.testing.assert_allclose(
        layers.weighted_sum(weights, v, axes, "head_major"), t5x,
        rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="attention layout 'x'"):
    layers.weighted_sum(weights, value, "bkhd", "x")
