"""The default (fastest) forward pass against the original's literal form.

The defaults compute attention head-major (`T5Config.attention_layout`),
draw dropout with 'unsafe_rbg' keys (`steps.DEFAULT_DROPOUT_RNG_IMPL`) and
cut batches to length buckets. The original's literal form is
`attention_layout='t5x'` (T5X's einsums, the same jaxpr as writing them by
hand: `test_attention_layout.py`) with 'threefry2x32' dropout keys and fixed
shapes. On the project's pre-trained mini T5 (the main job's frozen model,
../shared) with a soft prompt and real RTE validation inputs, the two agree
as the project's fidelity rule asks: logits within 1e-5 relative, the same
greedy decodes and beams, the same rank-classification choices, and
training losses within 1e-4 relative over 8 Adafactor steps.
"""

import jax
import numpy as np
import pytest

import helpers
from helpers import RTE, initial_params, mini_checkpoint
from prompt_tuning.data import rank_classification
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import choice_scoring
from prompt_tuning.training import data
from prompt_tuning.training import length_buckets as buckets_lib
from prompt_tuning.training import run_settings
from prompt_tuning.training import steps
from prompt_tuning.training import trainer

LENGTHS = {"inputs": 128, "targets": 8}
PROMPT_LENGTH = 20
EXAMPLES = 24
LOGITS_RTOL = 1e-5
LOSS_RTOL = 1e-4


@pytest.fixture(autouse=True)
def local_data(local_super_glue):
  yield local_super_glue


def mini_model(layout: str, dropout_rate: float = 0.0) -> EncoderDecoderModel:
  return helpers.mini_model(PROMPT_LENGTH, attention_layout=layout,
                            dropout_rate=dropout_rate)


def rte_batch(task: str = RTE, rows: int = EXAMPLES):
  """The first `rows` validation rows of `task` as one padded batch."""
  dataset = data.get_task(task).get_dataset(
      LENGTHS, split="validation", shuffle=False).take(rows)
  enumerated = data.feature_converter()(dataset, LENGTHS).enumerate()
  _, batch, n = next(data.numpy_batches(enumerated, rows))
  assert n == rows
  return enumerated, batch


def test_the_defaults_are_the_fast_forms():
  # The model gin files' ATTENTION_LAYOUT is the library's default.
  assert helpers.mini_model().module.config.attention_layout == "head_major"
  assert steps.DEFAULT_DROPOUT_RNG_IMPL == "unsafe_rbg"
  assert run_settings.DatasetConfig("t", LENGTHS, "train", 8).length_buckets \
      == buckets_lib.DEFAULT_SPEC == 64
  # The literal form's dropout key is T5X's raw threefry key.
  init_rng, dropout_rng = steps.run_keys(3, "threefry2x32")
  np.testing.assert_array_equal(
      np.stack([init_rng, dropout_rng]),
      jax.random.split(jax.random.PRNGKey(3)))
  init_fast, _ = steps.run_keys(3)
  np.testing.assert_array_equal(init_fast, init_rng)
  with pytest.raises(ValueError, match="dropout_rng_impl 'philox'.*one of"):
    steps.run_keys(3, "philox")


def test_logits_decodes_and_beams_agree_with_t5x():
  fast, literal = mini_model("head_major"), mini_model("t5x")
  params = initial_params(literal, lengths=LENGTHS,
                          checkpoint=mini_checkpoint())
  _, batch = rte_batch()
  ref = np.asarray(jax.jit(literal.logits)(params, batch))
  ours = np.asarray(jax.jit(fast.logits)(params, batch))
  assert np.abs(ours - ref).max() > 0  # Rounded differently, not the same.
  np.testing.assert_allclose(ours, ref, rtol=LOGITS_RTOL,
                             atol=LOGITS_RTOL * np.abs(ref).max())
  inputs = {"encoder_input_tokens": batch["encoder_input_tokens"]}
  for num_decodes in (1, 4):
    def decode(model, num_decodes=num_decodes):
      return jax.jit(lambda p, b: model.predict_batch(
          p, b, max_decode_length=LENGTHS["targets"],
          num_decodes=num_decodes))(params, inputs)
    tokens, scores = decode(literal)
    tokens_fast, scores_fast = decode(fast)
    np.testing.assert_array_equal(tokens_fast, tokens)
    np.testing.assert_allclose(scores_fast, scores, rtol=LOGITS_RTOL,
                               atol=LOGITS_RTOL)


def test_rank_classification_chooses_as_t5x():
  task = f"{RTE}_rank"
  num_choices = len(rank_classification.LABELS[task])
  fast, literal = mini_model("head_major"), mini_model("t5x")
  params = initial_params(literal, lengths=LENGTHS,
                          checkpoint=mini_checkpoint())
  rows, _ = rte_batch(task, rows=num_choices * EXAMPLES)

  def scores(model):
    scored = choice_scoring.score_rows(
        jax.jit(model.score_choices), params, rows, num_choices=num_choices,
        examples=8, bucketer=buckets_lib.Bucketer(buckets_lib.DEFAULT_SPEC,
                                                  cut_targets=True))
    return np.array([s for _, s in scored]).reshape(-1, num_choices)
  ref, ours = scores(literal), scores(fast)
  np.testing.assert_allclose(ours, ref, rtol=LOGITS_RTOL)
  np.testing.assert_array_equal(rank_classification.choose(ours),
                                rank_classification.choose(ref))


@pytest.mark.slow
def test_training_losses_agree_with_t5x_over_8_adafactor_steps(tmp_path):
  def losses(layout, impl, buckets):
    result = trainer.train(
        model=mini_model(layout, dropout_rate=0.1),
        train_dataset_cfg=run_settings.DatasetConfig(
            RTE, LENGTHS, "train", 8, length_buckets=buckets),
        train_steps=8, model_dir=str(tmp_path / f"{layout}_{impl}"),
        initial_checkpoint_path=mini_checkpoint(),
        checkpoint_cfg=run_settings.CheckpointConfig(period=8),
        dropout_rng_impl=impl, log_period=1, progress=False)
    return np.array([m["loss"] for _, m in result.history])
  # The literal form: T5X's einsums, threefry masks, fixed shapes.
  ref = losses("t5x", "threefry2x32", None)
  assert len(ref) == 8 and np.all(np.isfinite(ref))
  # Head-major attention and buckets, the same masks: the same losses.
  np.testing.assert_allclose(losses("head_major", "threefry2x32", 64), ref,
                             rtol=LOSS_RTOL)
  # The default's masks are other draws: a loss of the same size.
  fast = losses("head_major", "unsafe_rbg", 64)
  assert np.all(np.isfinite(fast)) and not np.allclose(fast, ref, rtol=1e-4)
  np.testing.assert_allclose(fast.mean(), ref.mean(), rtol=0.1)


def test_unsafe_rbg_dropout_compiles_no_threefry_loops():
  # Where the default's speed comes from: on CPU threefry's rounds are
  # rolled loops XLA inlines at every dropout site; RngBitGenerator has
  # none on any backend.
  model = mini_model("head_major", dropout_rate=0.1)
  params = initial_params(model, lengths=LENGTHS)
  _, batch = rte_batch(rows=2)

  def loops(impl):
    _, key = steps.run_keys(0, impl)
    grad = jax.jit(jax.grad(lambda p, k: model.loss_fn(p, batch, k)[0]))
    return grad.lower(params, key).compile().as_text().count(" while(")
  if jax.default_backend() == "cpu":
    assert loops("threefry2x32") > 0
  assert loops("unsafe_rbg") == 0
