"""Length bucketing: specs, cutting, the same result for an example in any
bucket (loss, gradients, scores, decodes), one compilation per bucket, and
the trainer, evaluation and inference with buckets on real RTE files."""

import json
import logging
import pathlib

import jax
import numpy as np
import pytest

from helpers import T5_VOCAB_SIZE, initial_params, rte_train_cfg, tiny_model
from prompt_tuning import errors
from prompt_tuning import evaluate as evaluate_lib
from prompt_tuning import infer as infer_lib
from prompt_tuning.training import length_buckets as lb
from prompt_tuning.training import run_settings
from prompt_tuning.training import trainer

RTE = "taskless_super_glue_rte_v102"
LENGTHS = {"inputs": 256, "targets": 8}


def _model(prompt_length=4):
  # Bucketing acts on lengths, the same through any number of layers.
  return tiny_model("prompt", prompt_length=prompt_length,
                    vocab_size=T5_VOCAB_SIZE, num_encoder_layers=1,
                    num_decoder_layers=1)


def _batch(input_lengths, target_lengths, width=64, target_width=8, seed=0):
  """SeqIO-style rows: real ids then trailing zeros, targets ending in EOS."""
  rng = np.random.default_rng(seed)
  n = len(input_lengths)
  enc = np.zeros((n, width), np.int32)
  tgt = np.zeros((n, target_width), np.int32)
  for row, (li, lt) in enumerate(zip(input_lengths, target_lengths)):
    enc[row, :li] = rng.integers(2, 32000, li)
    enc[row, li - 1] = 1
    tgt[row, :lt] = rng.integers(2, 32000, lt)
    tgt[row, lt - 1] = 1
  dec = np.concatenate([np.zeros((n, 1), np.int32), tgt[:, :-1]], axis=1)
  dec = np.where(tgt > 0, dec, 0)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt,
          "decoder_loss_weights": (tgt > 0).astype(np.int32)}


def test_an_int_spec_gives_its_multiples_up_to_the_feature_length():
  buckets = lb.LengthBuckets.from_spec(64, {"inputs": 200, "targets": 8})
  assert buckets.inputs == (64, 128, 192, 200)
  assert buckets.targets == (8,)
  assert [buckets.fit(n, "inputs") for n in (1, 64, 65, 193)] == [
      64, 64, 128, 200]
  assert lb.LengthBuckets.from_spec(None, LENGTHS) is None


def test_a_dict_spec_keeps_the_feature_length_as_its_last_bucket():
  buckets = lb.LengthBuckets.from_spec({"inputs": (128, 32)}, LENGTHS)
  assert buckets.inputs == (32, 128, 256) and buckets.targets == (8,)


@pytest.mark.parametrize("spec, match", [
    (0, "must be positive"),
    (True, "must be None"),
    ("64", "must be None"),
    ({"inputs": (512,)}, r"beyond the feature length 256"),
    ({"input": (64,)}, r"unknown features \['input'\]"),
    ({"inputs": (64, -1)}, "positive ints"),
])
def test_bad_specs_are_refused_naming_the_setting(spec, match):
  with pytest.raises(errors.ConfigError, match=match):
    lb.check_spec(spec, LENGTHS)


def test_cut_removes_only_trailing_padding():
  batch = _batch([5, 17, 9], [2, 6, 3], width=64)
  assert lb.needed_lengths(batch) == (17, 6)
  bucketer = lb.Bucketer(16, cut_targets=True)
  fed = bucketer(batch)
  assert fed["encoder_input_tokens"].shape == (3, 32)
  assert fed["decoder_target_tokens"].shape == (3, 8)  # 8 is the last bucket.
  for name, full in batch.items():
    cut = fed[name]
    np.testing.assert_array_equal(cut, full[:, :cut.shape[1]])
    assert not full[:, cut.shape[1]:].any()
  # Decoding keeps the decoder length (it sizes the decode).
  decode = lb.Bucketer(16, cut_targets=False)(batch)
  assert decode["decoder_input_tokens"].shape == (3, 8)
  assert bucketer.log.batches == {(32, 8): 1}
  real = sum(int(np.count_nonzero(batch[k])) for k in
             ("encoder_input_tokens", "decoder_target_tokens"))
  assert bucketer.log.padding_share == pytest.approx(1 - real / (3 * 40))
  assert bucketer.log.fixed_padding_share == pytest.approx(1 - real / (3 * 72))
  assert "32x8: 1" in bucketer.log.summary("Training batches")


@pytest.mark.slow
def test_an_example_has_the_same_loss_scores_and_decode_in_every_bucket():
  model = _model()
  params = initial_params(model, lengths={"inputs": 64, "targets": 8})
  batch = _batch([5, 40, 9, 23], [2, 6, 3, 8], width=64)
  loss = jax.jit(model.loss_fn)
  score = jax.jit(model.score_batch)
  predict = jax.jit(model.predict_batch)
  grad = jax.jit(jax.grad(lambda p, b: model.loss_fn(p, b)[0]))

  full_metrics = loss(params, batch)[1]
  full_scores = np.asarray(score(params, batch))
  full_tokens, full_decode_scores = predict(params, batch)
  full_grad = grad(params, batch)["prompt"]["prompt"]

  cut = lb.Bucketer(16, cut_targets=True)(batch)
  assert cut["encoder_input_tokens"].shape[1] == 48
  for key, value in loss(params, cut)[1].items():
    np.testing.assert_allclose(value, full_metrics[key], rtol=1e-6,
                               err_msg=key)
  np.testing.assert_allclose(score(params, cut), full_scores, rtol=1e-6)
  # Float32 sums over fewer (zero) terms: equal to rounding.
  np.testing.assert_allclose(grad(params, cut)["prompt"]["prompt"], full_grad,
                             rtol=1e-5, atol=1e-6)
  tokens, decode_scores = predict(params,
                                  lb.Bucketer(16, cut_targets=False)(batch))
  np.testing.assert_array_equal(tokens, full_tokens)
  np.testing.assert_allclose(decode_scores, full_decode_scores, rtol=1e-6)

  # Each example alone lands in its own (smaller) bucket: same results.
  alone = lb.Bucketer(16, cut_targets=True)
  for row in range(4):
    one = alone({k: v[row:row + 1] for k, v in batch.items()})
    np.testing.assert_allclose(score(params, one), full_scores[row:row + 1],
                               rtol=1e-6)
    one_tokens, _ = predict(params, lb.cut(one, one["encoder_input_tokens"]
                                           .shape[1], 8))
    np.testing.assert_array_equal(one_tokens, full_tokens[row:row + 1])
  assert set(alone.log.batches) == {(16, 8), (48, 8), (32, 8)}


@pytest.mark.slow
def test_one_compilation_per_bucket():
  model = _model()
  params = initial_params(model, lengths={"inputs": 64, "targets": 8})
  score = jax.jit(model.score_batch)
  bucketer = lb.Bucketer(16, cut_targets=True)
  rng = np.random.default_rng(3)
  for _ in range(10):
    lengths = rng.integers(1, 65, 2)
    score(params, bucketer(_batch(lengths, [3, 4], width=64)))
  shapes = set(bucketer.log.batches)
  assert 1 < len(shapes) <= 4  # Buckets 16, 32, 48, 64 (targets: 8).
  assert score._cache_size() == len(shapes)


def test_evaluation_batches_by_length_hold_every_example_once():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import data  # pylint: disable=g-import-not-at-top
  lengths = [30, 3, 17, 3, 64, 9, 41]
  batch = _batch(lengths, [2] * len(lengths), width=64)
  ds = tf.data.Dataset.from_tensor_slices(batch).enumerate()
  plain = list(data.numpy_batches(ds, 3))
  by_length = list(data.numpy_batches(ds, 3, by_length=True))
  assert [n for _, _, n in by_length] == [3, 3, 1]
  order = np.concatenate([i[:n] for i, _, n in by_length])
  assert sorted(order.tolist()) == list(range(len(lengths)))
  assert [lengths[i] for i in order] == sorted(lengths)
  assert order[:2].tolist() == [1, 3]  # Ties keep dataset order.
  rows = {int(i): b["encoder_input_tokens"][k] for i, b, n in by_length
          for k, i in enumerate(i[:n])}
  for indices, b, n in plain:  # The same rows, only batched otherwise.
    for k, i in enumerate(indices[:n]):
      np.testing.assert_array_equal(rows[int(i)], b["encoder_input_tokens"][k])
  # Bucketing the sorted batches keeps less padding than the plain ones.
  cut_plain, cut_sorted = (lb.Bucketer(16, cut_targets=True) for _ in "ab")
  for _, b, _ in plain:
    cut_plain(b)
  for _, b, _ in by_length:
    cut_sorted(b)
  assert cut_sorted.log.padding_share < cut_plain.log.padding_share


@pytest.fixture
def rte(local_super_glue):
  return local_super_glue


def _train(tmp_path, name, buckets, caplog):
  model_dir = tmp_path / name
  with caplog.at_level(logging.INFO, logger=trainer.__name__):
    result = trainer.train(
        model=_model(),
        train_dataset_cfg=rte_train_cfg(LENGTHS, length_buckets=buckets),
        train_steps=4, model_dir=str(model_dir), log_period=1,
        checkpoint_cfg=run_settings.CheckpointConfig(period=100),
        progress=False)
  return result, model_dir


@pytest.mark.slow
def test_training_evaluation_and_inference_agree_with_and_without_buckets(
    tmp_path, rte, caplog):
  fixed, fixed_dir = _train(tmp_path, "fixed", None, caplog)
  bucketed, bucketed_dir = _train(tmp_path, "bucketed", 64, caplog)
  assert "Training batches: batches per inputs x targets length" in caplog.text
  for (step, a), (_, b) in zip(fixed.history, bucketed.history):
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5,
                               err_msg=f"step {step}")
    assert b["padding_share"] < a["padding_share"]
  np.testing.assert_allclose(
      jax.device_get(bucketed.state.trainable["prompt"]["prompt"]),
      jax.device_get(fixed.state.trainable["prompt"]["prompt"]), rtol=1e-4,
      atol=1e-6)

  def evaluate(buckets):
    return evaluate_lib.evaluate(
        model=_model(), mixture_or_task_name=RTE,
        task_feature_lengths=LENGTHS, batch_size=16,
        model_dir=str(bucketed_dir), initial_checkpoint_path=None,
        output_dir=str(tmp_path / f"eval_{buckets}"), num_examples=48,
        length_buckets=buckets)
  assert evaluate(64) == evaluate(None)

  def infer(buckets):
    paths = infer_lib.infer(
        model=_model(), mixture_or_task_name=RTE,
        task_feature_lengths=LENGTHS, batch_size=32,
        model_dir=str(bucketed_dir), initial_checkpoint_path=None,
        output_dir=str(tmp_path / f"infer_{buckets}"), split="validation",
        length_buckets=buckets)
    return [json.loads(line)["prediction"] for line in
            pathlib.Path(paths[RTE]).read_text().splitlines()]
  assert infer(64) == infer(None)


def test_inference_streams_without_buckets_and_sorts_with_them(rte):
  # A fake decoder that records each batch: the first record of a
  # fixed-shape run needs one batch decoded; with buckets (batches by
  # length) every batch, and the records still come in dataset order.
  import itertools  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import data  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import inference  # pylint: disable=g-import-not-at-top
  del rte
  calls = []

  def predict(params, batch):
    del params
    calls.append(batch["encoder_input_tokens"].shape)
    tokens = np.zeros((batch["encoder_input_tokens"].shape[0], 8), np.int32)
    return tokens, None

  task = data.get_task(RTE)

  def records(buckets, count):
    calls.clear()
    return list(itertools.islice(inference.predict_task(
        task, predict, None, LENGTHS, 32, "validation", buckets), count))
  first = records(None, 1)
  assert len(calls) == 1 and first[0]["index"] == 0
  every = records(64, None)
  assert len(calls) == 9  # 277 validation examples.
  assert [r["index"] for r in every] == list(range(277))
  assert len({shape for shape in calls}) > 1


def test_a_bad_spec_fails_before_anything_is_written(tmp_path, rte):
  with pytest.raises(errors.ConfigError, match="LENGTH_BUCKETS"):
    trainer.train(model=_model(), train_dataset_cfg=rte_train_cfg(
                      LENGTHS, length_buckets={"inputs": (1024,)}),
                  train_steps=1, model_dir=str(tmp_path / "run"),
                  progress=False)
  assert not (tmp_path / "run").exists()


def test_grouped_batches_hold_examples_of_one_bucket(rte):
  from prompt_tuning.training import data  # pylint: disable=g-import-not-at-top

  def first(n, **kwargs):
    stream = data.train_batches(RTE, LENGTHS, 8, seed=1, **kwargs)
    return [next(stream) for _ in range(n)]
  grouped = first(6, group_lengths=(64, 128, 256))
  buckets = lb.LengthBuckets.from_spec({"inputs": (64, 128)}, LENGTHS)
  for batch in grouped:
    lengths = np.count_nonzero(batch["encoder_input_tokens"], axis=1)
    assert len({buckets.fit(n, "inputs") for n in lengths}) == 1, lengths
  again = first(6, group_lengths=(64, 128, 256))
  for a, b in zip(grouped, again):  # Deterministic for a seed.
    np.testing.assert_array_equal(a["encoder_input_tokens"],
                                  b["encoder_input_tokens"])
  plain, grouped_log = lb.Bucketer(64, cut_targets=True), lb.Bucketer(
      64, cut_targets=True)
  for batch in first(6):
    plain(batch)
  for batch in grouped:
    grouped_log(batch)
  assert grouped_log.log.padding_share < plain.log.padding_share


@pytest.mark.slow
def test_grouping_needs_buckets(tmp_path, rte):
  with pytest.raises(errors.ConfigError, match="LENGTH_BUCKETS is None"):
    trainer.train(model=_model(), train_dataset_cfg=rte_train_cfg(
                      LENGTHS, length_buckets=None, group_by_length=True),
                  train_steps=1, model_dir=str(tmp_path / "run"),
                  progress=False)
  result = trainer.train(model=_model(), train_dataset_cfg=rte_train_cfg(
                             LENGTHS, length_buckets=64, group_by_length=True),
                         train_steps=3, model_dir=str(tmp_path / "run"),
                         log_period=3, progress=False)
  assert np.isfinite(result.metrics["loss"])
  assert result.metrics["padding_share"] < 0.5
