"""Rank classification encodes each example once (`score_choices`,
`training.choice_scoring`) and gets the row-per-label path's scores
(`score_batch` on one row per label) to float rounding: relative 1e-5,
and the same chosen label for every example.

Checked on random batches and on the rows of real SuperGLUE validation
examples (CB's three labels, COPA's two choices, MultiRC's answer options,
RTE), with a soft prompt and with a deep (P-Tuning v2) prompt in the
encoder and the decoder, with fixed shapes and with length buckets, and
through `Evaluation` (the default encode-once path against
`encode_once=False`).
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import T5_VOCAB_SIZE, tiny_model
from prompt_tuning import partitioning
from prompt_tuning.data import rank_classification
from prompt_tuning.training import choice_scoring
from prompt_tuning.training import data
from prompt_tuning.training import evaluation
from prompt_tuning.training import length_buckets as buckets_lib

RTOL = 1e-5
LENGTHS = {"inputs": 64, "targets": 8}
CB, COPA, MULTIRC, RTE = (f"taskless_super_glue_{b}_v102_rank"
                          for b in ("cb", "copa", "multirc", "rte"))
# Rows per task: whole examples plus one row of the next (cut off, as
# `num_examples` may cut an example, and scored all the same).
ROWS = {CB: 3 * 7 + 1, COPA: 2 * 9 + 1, MULTIRC: 2 * 9 + 1, RTE: 2 * 10}
MAX_ROWS = 32  # The row path's batch (every task's rows in one).


@pytest.fixture(autouse=True)
def local_data(local_super_glue):
  yield local_super_glue


def host_params(model, lengths=None):
  """Random parameters drawn on the host (no compiled init)."""
  lengths = lengths or LENGTHS
  boxed = model.init_shapes(lengths["inputs"], lengths["targets"])["params"]
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(size=s.shape).astype(s.dtype)
                            / np.sqrt(s.shape[0] if s.ndim > 1 else 1)),
      nn.unbox(boxed))


def row_scores(model, params, batch):
  """The reference: `score_batch` on the rows, `[n]`."""
  return np.asarray(jax.jit(model.score_batch)(params, batch))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["plain", "prompt", "deep"])
def test_score_choices_equals_one_row_per_candidate(kind):
  model = tiny_model(kind)
  params = host_params(model, {"inputs": 10, "targets": 6})
  rng = np.random.default_rng(1)
  b, c, l, t = 3, 3, 10, 6
  inputs = rng.integers(2, 128, (b, l)).astype(np.int32)
  inputs[1, 7:] = 0
  targets = rng.integers(2, 128, (b, c, t)).astype(np.int32)
  targets[0, 1, 3:] = 0
  targets[2, 2] = 0  # An empty candidate slot: scores 0.
  decoder_inputs = np.concatenate(
      [np.zeros((b, c, 1), np.int32), targets[..., :-1]], axis=-1)
  once = np.asarray(jax.jit(model.score_choices)(params, {
      "encoder_input_tokens": inputs, "decoder_input_tokens": decoder_inputs,
      "decoder_target_tokens": targets}))
  rows = row_scores(model, params, {
      "encoder_input_tokens": np.repeat(inputs, c, axis=0),
      "decoder_input_tokens": decoder_inputs.reshape(b * c, t),
      "decoder_target_tokens": targets.reshape(b * c, t)}).reshape(b, c)
  assert once.shape == (b, c)
  assert once[2, 2] == 0.0
  np.testing.assert_allclose(once, rows, rtol=RTOL)
  np.testing.assert_array_equal(rank_classification.choose(once),
                                rank_classification.choose(rows))


def test_rows_are_grouped_by_equal_inputs():
  def row(index, inputs):
    return index, {"encoder_input_tokens": np.array(inputs)}
  rows = [row(0, [5, 6]), row(1, [5, 6]), row(2, [5, 6]), row(3, [7, 0]),
          row(4, [5, 6])]
  groups = choice_scoring.group_rows(rows, num_choices=2)
  assert [[i for i, _ in g] for g in groups] == [[0, 1], [2], [3], [4]]
  assert choice_scoring.examples_per_batch(64, 3, data_shards=8) == 16
  assert choice_scoring.examples_per_batch(64, 2) == 32
  assert choice_scoring.examples_per_batch(4, 3, data_shards=2) == 2


def task_rows(task):
  """`(index, features)` rows of a rank variant's first validation
  examples, as the evaluator's `score_fn` gets them."""
  dataset = data.get_task(task).get_dataset(
      LENGTHS, split="validation", shuffle=False).take(ROWS[task])
  return data.feature_converter()(dataset, LENGTHS).enumerate()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["prompt", "deep"])
def test_real_examples_score_as_one_row_per_label(kind):
  model = tiny_model(kind, prompt_length=2, prefix_length=2,
                     vocab_size=T5_VOCAB_SIZE)
  params = host_params(model)
  score_choices = jax.jit(model.score_choices)
  for task in (CB, COPA, MULTIRC, RTE):
    ds = task_rows(task)  # Registers the tasks.
    num_choices = len(rank_classification.LABELS[task])
    indices, batch, n = next(data.numpy_batches(ds, MAX_ROWS))
    assert n == ROWS[task]
    reference = row_scores(model, params, batch)[:n]
    for bucketer in (None, buckets_lib.Bucketer(16, cut_targets=True)):
      scored = choice_scoring.score_rows(
          score_choices, params, ds, num_choices=num_choices, examples=4,
          bucketer=bucketer)
      assert [i for i, _ in scored] == indices[:n].tolist()
      once = np.array([s for _, s in scored])
      np.testing.assert_allclose(once, reference, rtol=RTOL, err_msg=task)
      whole = n // num_choices * num_choices
      np.testing.assert_array_equal(
          rank_classification.choose(once[:whole].reshape(-1, num_choices)),
          rank_classification.choose(
              reference[:whole].reshape(-1, num_choices)), err_msg=task)


@pytest.mark.slow
def test_evaluation_encodes_once_with_the_row_paths_metrics(tmp_path):
  model = tiny_model("prompt", prompt_length=2, vocab_size=T5_VOCAB_SIZE)
  params = host_params(model)
  boxed = model.init_shapes(LENGTHS["inputs"], LENGTHS["targets"])["params"]
  mesh = partitioning.create_mesh()
  shardings = partitioning.param_shardings(boxed, mesh)
  results, logged = {}, {}
  for encode_once in (True, False):
    log_dir = tmp_path / str(encode_once)
    run = evaluation.Evaluation(CB, model, mesh, shardings, batch_size=16,
                                feature_lengths=LENGTHS,
                                num_examples=ROWS[CB], log_dir=str(log_dir),
                                encode_once=encode_once)
    results[encode_once] = run(params, step=1)
    # 16 rows a batch: 8 examples (one per data shard) encoded once each.
    assert list(run._choice_feeds) == ([8] if encode_once else [])  # pylint: disable=protected-access
    logged[encode_once] = [
        json.loads(line)["score"] for line in
        (log_dir / f"{CB}-000001.jsonl").read_text().splitlines()]
  assert len(logged[True]) == ROWS[CB]
  np.testing.assert_allclose(logged[True], logged[False], rtol=RTOL)
  assert results[True] == results[False]
