"""SeqIO evaluation: greedy decoding for predict metrics, scoring for
rank-classification metrics, results as JSON and TensorBoard.

`Evaluation(...)(params, step)` runs every task of a task or mixture on one
split and returns `{task_name: {metric: value}}`; SeqIO's loggers write
`<log_dir>/<task>-metrics.jsonl`, the decoded inferences, and TensorBoard
events. A rank-classification variant's rows are scored one example at a
time: its inputs encoded once, every label decoded against them
(`choice_scoring`).

In a multi-process run every process reads the whole split and feeds its
devices' rows; all compute the metrics, process 0 writes the logs.

A model with `objective='classification'` is evaluated through its head:
its class ids reach the task's metric functions as label text
(`class_predictions`); metrics that score targets still use the decoder.
"""

import logging
import os
from typing import Any, Mapping, Optional

import numpy as np
import seqio
from jax.sharding import Mesh

from prompt_tuning import partitioning
from prompt_tuning.data import rank_classification
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import choice_scoring
from prompt_tuning.training import class_predictions
from prompt_tuning.training import data
from prompt_tuning.training import distributed
from prompt_tuning.training import length_buckets as buckets_lib
from prompt_tuning.training import partitioned


_log = logging.getLogger(__name__)


def _value(metric: Any) -> Any:
  """Unwraps seqio's metric value objects to plain numbers."""
  value = getattr(metric, "value", metric)
  if isinstance(value, np.ndarray) and value.size == 1:
    return float(value)
  if isinstance(value, (np.floating, np.integer)):
    return float(value)
  return value


class _FixedLengthsNote(logging.Filter):
  """Drops seqio's warning that the evaluation's feature lengths exceed its
  longest example: fixed lengths are on purpose here (one compiled shape, or
  `length_buckets` cutting the padding), and the padding is masked."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "lengths are longer than necessary" not in str(record.msg)


def _quiet_seqio_length_note() -> None:
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _FixedLengthsNote) for f in logger.filters):
    logger.addFilter(_FixedLengthsNote())


class Evaluation:
  """Evaluates a model on the tasks of `task_name` (a task or mixture).

  Attributes:
    evaluator: the underlying `seqio.Evaluator`.
  """

  def __init__(self, task_name: str, model: EncoderDecoderModel, mesh: Mesh,
               param_shardings: Any, *, batch_size: int,
               feature_lengths: Optional[Mapping[str, int]] = None,
               split: str = "validation", log_dir: Optional[str] = None,
               num_examples: Optional[int] = None,
               length_buckets: buckets_lib.Spec = buckets_lib.DEFAULT_SPEC,
               encode_once: bool = True):
    """See the class doc; `length_buckets` (`training.length_buckets`) cuts
    each batch's encoder features (and, for scoring, decoder features) to a
    bucket length; None keeps the fixed shapes. `encode_once` scores a rank
    variant's rows with one encoder pass per example (`choice_scoring`);
    False scores every row with its own (`score_batch`, the reference)."""
    data.get_task(task_name)  # Clear error for unknown names.
    _quiet_seqio_length_note()
    loggers = ()
    if log_dir and not distributed.is_primary():
      log_dir = None  # Process 0 writes the logs for all.
    if log_dir:
      os.makedirs(log_dir, exist_ok=True)
      loggers = (seqio.JSONLogger, seqio.TensorBoardLogger)
    self.evaluator = seqio.Evaluator(
        mixture_or_task_name=task_name,
        feature_converter=data.feature_converter(),
        eval_split=split,
        sequence_length=None if feature_lengths is None else
        dict(feature_lengths),
        num_examples=num_examples,
        logger_cls=loggers,
        log_dir=log_dir,
        use_memory_cache=True)
    self.batch_size = batch_size
    # Every process holds the whole batch: the cut lengths agree already.
    self._decode_cut = buckets_lib.Bucketer(length_buckets, cut_targets=False)
    self._score_cut = buckets_lib.Bucketer(length_buckets, cut_targets=True)
    self._feed = distributed.batch_feed(partitioning.batch_sharding(mesh),
                                        batch_size)
    self._predict = partitioned.compile_model_fn(model.predict_batch, mesh,
                                                 param_shardings)
    self._score = partitioned.compile_model_fn(model.score_batch, mesh,
                                               param_shardings)
    self.encode_once = encode_once
    self._score_choices = partitioned.compile_model_fn(
        model.score_choices, mesh, param_shardings)
    self._batch_sharding = partitioning.batch_sharding(mesh)
    self._data_shards = int(mesh.shape[partitioning.MESH_AXES[0]])
    self._choice_feeds = {}  # Examples per batch -> its BatchFeed.
    self._class_predict = {}  # Task name -> label predict fn (classifier).
    if model.is_classifier:
      classify = class_predictions.compile_classify(model, mesh,
                                                    param_shardings)
      self._class_predict = {
          task.name: class_predictions.label_predict_fn(classify, task)
          for task in self.evaluator.eval_tasks}

  def _predict_fn(self, params, ds):
    """Decoded tokens, or the head's class ids as label tokens."""
    if not self._class_predict:
      return self._run(self._predict, params, ds, self._decode_cut)
    cached = self.evaluator.cached_model_datasets
    name = next(n for n, d in cached.items() if d is ds)
    return self._run(self._class_predict[name], params, ds, self._decode_cut)

  def score(self, params: Any, ds: Any) -> list[tuple[int, float]]:
    """SeqIO's `score_fn`: `[(row index, log-likelihood)]` in index order.

    A rank variant's rows (`data.rank_classification`) are scored with one
    encoder pass per example (`choice_scoring`, at most `batch_size` rows a
    batch) unless `encode_once` is off; other tasks' row by row.
    """
    cached = self.evaluator.cached_model_datasets
    name = next((n for n, d in cached.items() if d is ds), None)
    labels = rank_classification.LABELS.get(name) if self.encode_once else None
    if not labels:
      return self._run(self._score, params, ds, self._score_cut)
    examples = choice_scoring.examples_per_batch(
        self.batch_size, len(labels), self._data_shards)
    if examples not in self._choice_feeds:
      self._choice_feeds[examples] = distributed.batch_feed(
          self._batch_sharding, examples)
    return choice_scoring.score_rows(
        self._score_choices, params, ds, num_choices=len(labels),
        examples=examples, feed=self._choice_feeds[examples].from_full,
        bucketer=self._score_cut)

  def _run(self, fn, params, ds, bucketer):
    """`[(example index, output)]` in index order; with length buckets the
    examples are batched by length (`data.numpy_batches(by_length=True)`),
    which changes no example's output, only how much padding it shares."""
    outputs = []
    for indices, batch, n in data.numpy_batches(
        ds, self.batch_size, by_length=bucketer.spec is not None):
      result = fn(params, self._feed.from_full(bucketer(batch)))
      if isinstance(result, tuple):
        result = result[0]
      result = np.asarray(distributed.gather(result))[:n]
      outputs.extend(zip(indices[:n].tolist(), result.tolist()))
    return sorted(outputs, key=lambda pair: pair[0])

  def __call__(self, params: Any, step: int) -> dict[str, dict[str, Any]]:
    for bucketer in (self._decode_cut, self._score_cut):
      bucketer.log = buckets_lib.BucketLog()  # This evaluation's batches.
    metrics, _ = self.evaluator.evaluate(
        compute_metrics=True, step=step,
        predict_fn=lambda ds: self._predict_fn(params, ds),
        score_fn=lambda ds: self.score(params, ds))
    for what, bucketer in (("Decoded batches", self._decode_cut),
                           ("Scored batches", self._score_cut)):
      if bucketer.log.batches:
        _log.info("%s", bucketer.log.summary(what))
    results = metrics.result()
    return {task: {name: _value(v) for name, v in task_metrics.items()}
            for task, task_metrics in results.items()}
