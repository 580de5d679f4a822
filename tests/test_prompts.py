"""Soft prompts: placements and masks, the prompt model, banks of prompts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import random_batch, tiny_config
from prompt_tuning import partitioning
from prompt_tuning.models import Transformer
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import PromptTransformer
from prompt_tuning.prompts import combine
from prompt_tuning.prompts import initializers

CONFIG = tiny_config()
PLACEMENTS = (combine.PREFIX, combine.SUFFIX, combine.PREFIX_AFTER_FIRST)


def make_batch(batch: int = 3, inputs: int = 8, targets: int = 5,
               seed: int = 1):
  return random_batch(CONFIG.vocab_size, batch, inputs, targets, seed)


def prompt_model(seed: int = 0, **kwargs):
  kwargs.setdefault("prompt_length", 4)
  kwargs.setdefault("prompt_init",
                    initializers.random_uniform(0.5, symmetric=True))
  model = EncoderDecoderModel(PromptTransformer(CONFIG, **kwargs))
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), 8, 5))["params"]
  return model, params


# --- combine.py -------------------------------------------------------------


def _marked_inputs():
  """Prompt rows = -(1..p), input rows = 1..l (0 at padding)."""
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]],
                   jnp.float32)
  embedded = (jnp.arange(1, 6, dtype=jnp.float32)[None, :, None] *
              mask[:, :, None] * jnp.ones((3, 5, 2)))
  prompt = -jnp.arange(1, 3, dtype=jnp.float32)[None, :, None] * jnp.ones(
      (3, 2, 2))
  return prompt, embedded, mask


@pytest.mark.parametrize("placement,rows,masks", [
    (combine.PREFIX,
     [[-1, -2, 1, 2, 3, 0, 0], [-1, -2, 1, 2, 3, 4, 5],
      [-1, -2, 1, 0, 0, 0, 0]],
     [[1, 1, 1, 1, 1, 0, 0], [1] * 7, [1, 1, 1, 0, 0, 0, 0]]),
    (combine.SUFFIX,
     [[1, 2, 3, -1, -2, 0, 0], [1, 2, 3, 4, 5, -1, -2],
      [1, -1, -2, 0, 0, 0, 0]],
     [[1, 1, 1, 1, 1, 0, 0], [1] * 7, [1, 1, 1, 0, 0, 0, 0]]),
    (combine.PREFIX_AFTER_FIRST,
     [[1, -1, -2, 2, 3, 0, 0], [1, -1, -2, 2, 3, 4, 5],
      [1, -1, -2, 0, 0, 0, 0]],
     [[1, 1, 1, 1, 1, 0, 0], [1] * 7, [1, 1, 1, 0, 0, 0, 0]]),
])
def test_combination_places_prompt_and_mask(placement, rows, masks):
  prompt, embedded, mask = _marked_inputs()
  joined, joined_mask = combine.get_combination(placement)(prompt, embedded,
                                                          mask)
  assert joined.shape == (3, 7, 2) and joined_mask.shape == (3, 7)
  np.testing.assert_array_equal(joined[..., 0], rows)
  np.testing.assert_array_equal(joined_mask, masks)
  back, back_mask = combine.remove_prompt(joined, joined_mask, 2, placement)
  np.testing.assert_array_equal(back, embedded)
  np.testing.assert_array_equal(back_mask, mask)


def test_unknown_placement_is_rejected():
  with pytest.raises(ValueError, match="Unknown prompt placement 'middle'"):
    combine.get_combination("middle")


# --- the prompt model ---------------------------------------------------------


def test_prompt_parameter_path_and_logical_axes():
  model = EncoderDecoderModel(PromptTransformer(CONFIG, prompt_length=5))
  boxed = model.init_shapes(4, 4)["params"]
  assert boxed["prompt"]["prompt"].names == ("prompt", "embed")
  assert boxed["prompt"]["prompt"].value.shape == (5, CONFIG.emb_dim)
  bank = EncoderDecoderModel(
      PromptTransformer(CONFIG, prompt_length=5, num_prompts=3))
  boxed_bank = bank.init_shapes(4, 4)["params"]
  assert boxed_bank["prompt"]["prompt"].names == ("prompts", "prompt", "embed")
  assert boxed_bank["prompt"]["prompt"].value.shape == (3, 5, CONFIG.emb_dim)
  partitioning.check_logical_axes(boxed_bank)


@pytest.mark.slow
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_prompt_length_zero_is_the_base_model(placement):
  model, params = prompt_model(prompt_length=0, placement=placement)
  assert params["prompt"]["prompt"].shape == (0, CONFIG.emb_dim)
  base = EncoderDecoderModel(Transformer(CONFIG))
  base_params = {k: v for k, v in params.items() if k != "prompt"}
  batch = make_batch()
  # Bit-for-bit: an empty prompt adds nothing to any computation.
  np.testing.assert_array_equal(model.logits(params, batch),
                                base.logits(base_params, batch))


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_encoder_output_grows_by_prompt_unless_removed(placement):
  model, params = prompt_model(placement=placement)
  tokens = make_batch()["encoder_input_tokens"]
  encoded, mask = model.module.apply({"params": params}, tokens,
                                     method="encode")
  assert encoded.shape == (3, 12, CONFIG.emb_dim)
  np.testing.assert_array_equal(jnp.sum(mask, 1),
                                jnp.sum(tokens > 0, 1) + 4)
  removed = EncoderDecoderModel(PromptTransformer(
      CONFIG, prompt_length=4, placement=placement,
      remove_prompt_from_output=True))
  short, short_mask = removed.module.apply({"params": params}, tokens,
                                           method="encode")
  assert short.shape == (3, 8, CONFIG.emb_dim)
  np.testing.assert_array_equal(short_mask, tokens > 0)
  # The kept positions are the input positions of the full output.
  expected, _ = combine.remove_prompt(encoded, mask, 4, placement)
  np.testing.assert_allclose(short, expected, atol=1e-6)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_prompt_changes_outputs_and_padding_does_not(placement):
  model, params = prompt_model(placement=placement)
  batch = make_batch()
  logits = model.logits(params, batch)
  other = dict(params, prompt={"prompt": params["prompt"]["prompt"] + 1.0})
  assert not np.allclose(model.logits(other, batch), logits, atol=1e-3)
  # Row 1 has 3 padded inputs: dropping them keeps its logits.
  short = {k: v[1:2] for k, v in batch.items()}
  short["encoder_input_tokens"] = short["encoder_input_tokens"][:, :-3]
  np.testing.assert_allclose(model.logits(params, short)[0], logits[1],
                             atol=1e-5)


def test_base_model_rejects_prompt_index():
  base = EncoderDecoderModel(Transformer(CONFIG))
  params = nn.unbox(base.init(jax.random.PRNGKey(0), 8, 5))["params"]
  batch = dict(make_batch(), prompt_index=jnp.zeros((3,), jnp.int32))
  with pytest.raises(ValueError, match="has no prompts"):
    base.logits(params, batch)


def test_bank_requires_prompt_index_and_single_prompt_rejects_one():
  bank, bank_params = prompt_model(num_prompts=2)
  with pytest.raises(ValueError, match="bank of 2 prompts"):
    bank.logits(bank_params, make_batch())
  single, params = prompt_model()
  with pytest.raises(ValueError, match="single prompt"):
    single.logits(params, dict(make_batch(),
                               prompt_index=jnp.zeros((3,), jnp.int32)))


@pytest.mark.parametrize("placement", [combine.PREFIX, combine.SUFFIX])
def test_mixed_prompt_batch_equals_each_example_alone(placement):
  model, params = prompt_model(num_prompts=3, placement=placement, seed=2)
  bank = params["prompt"]["prompt"]
  assert not np.allclose(bank[0], bank[1])  # Slots are drawn independently.
  batch = dict(make_batch(), prompt_index=jnp.array([2, 0, 1], jnp.int32))
  mixed = model.logits(params, batch)
  single = EncoderDecoderModel(PromptTransformer(
      CONFIG, prompt_length=4, placement=placement))
  for row, slot in enumerate([2, 0, 1]):
    alone = {k: v[row:row + 1] for k, v in batch.items()
             if k != "prompt_index"}
    own = dict(params, prompt={"prompt": bank[slot]})
    np.testing.assert_allclose(single.logits(own, alone)[0], mixed[row],
                               atol=1e-5)


@pytest.mark.slow
def test_beam_search_keeps_each_example_on_its_prompt():
  model, params = prompt_model(num_prompts=2, seed=3)
  batch = dict(make_batch(batch=2), prompt_index=jnp.array([1, 0], jnp.int32))
  predict = jax.jit(lambda p, b: model.predict_batch(p, b, num_decodes=2,
                                                     alpha=0.0))
  tokens, scores = predict(params, batch)
  swapped = {"prompt": params["prompt"]["prompt"][::-1]}
  flipped = dict(batch, prompt_index=jnp.array([0, 1], jnp.int32))
  tokens2, scores2 = predict(dict(params, prompt=swapped), flipped)
  np.testing.assert_array_equal(tokens, tokens2)
  np.testing.assert_allclose(scores, scores2, atol=1e-5)
  # Rescoring the decodes teacher-forced with the right prompts agrees.
  dec_in = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), tokens[:, :-1]], 1)
  forced = dict(batch, decoder_input_tokens=dec_in,
                decoder_target_tokens=tokens)
  np.testing.assert_allclose(model.score_batch(params, forced), scores,
                             atol=1e-3)


def test_dropout_acts_on_the_joined_embedding():
  config = tiny_config(dropout_rate=0.5)
  model = EncoderDecoderModel(PromptTransformer(config, prompt_length=4))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), 8, 5))["params"]
  batch = make_batch()
  a = model.logits(params, batch, dropout_rng=jax.random.PRNGKey(1))
  b = model.logits(params, batch, dropout_rng=jax.random.PRNGKey(2))
  assert not np.allclose(a, b)
