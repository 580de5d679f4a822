"""A classification head's predictions in the form the task's metrics read.

A model trained with `objective='classification'` predicts a class id per
example (`EncoderDecoderModel.classify_batch`, the head's argmax). The
task's own metric functions (accuracy, macro-F1, MCC, MultiRC's grouped F1,
...) compare *postprocessed* predictions with postprocessed targets, and the
postprocessors map label text to class ids. So a class id `k` is handed to
SeqIO as the token ids of the task's `k`-th label string (plus EOS): the
evaluator (or `inference.predict_task`) decodes it back to exactly that
label, the task's `postprocess_fn` turns it into `k` (with any grouping the
metric needs) and the registered metrics score it. No metric is
re-implemented here, and the label tokens round-trip exactly (checked).

An id the task has no label for (a head with more classes than the task)
becomes an empty prediction, which postprocesses to -1: wrong.
"""

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np
import seqio
from jax.sharding import Mesh

from prompt_tuning import errors
from prompt_tuning.data import labels as data_labels
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import distributed
from prompt_tuning.training import partitioned

PredictFn = Callable[[Any, Mapping[str, np.ndarray]], tuple[np.ndarray, None]]


def class_names(task: seqio.Task) -> tuple[str, ...]:
  """The task's label strings in class-id order; raises if it has none."""
  labels = (data_labels.label_strings(task.name) or {}).get(task.name)
  if not labels:
    raise errors.ConfigError(
        f"{task.name} has no closed label set, so a classification head "
        "cannot be evaluated on it (objective='classification' needs tasks "
        "such as SuperGLUE RTE, BoolQ, CB, MultiRC); evaluate it with the "
        "seq2seq objective instead.")
  return tuple(labels)


def label_token_table(task: seqio.Task) -> np.ndarray:
  """`[classes + 1, L]` int32: row k holds label k's ids then EOS, 0-padded.

  The last row is the empty prediction (EOS only) for unknown class ids.
  """
  feature = task.output_features["targets"]
  vocab = feature.vocabulary
  rows = []
  for label in class_names(task):
    ids = list(vocab.encode(label))
    if vocab.decode(ids) != label:
      raise errors.ConfigError(
          f"{task.name}'s label {label!r} does not survive tokenisation "
          f"(decodes to {vocab.decode(ids)!r}), so class predictions could "
          "not be scored as that label.")
    rows.append(ids + [vocab.eos_id])
  rows.append([vocab.eos_id])
  width = max(len(r) for r in rows)
  return np.array([r + [0] * (width - len(r)) for r in rows], np.int32)


def ids_to_label_tokens(class_ids: np.ndarray,
                        table: np.ndarray) -> np.ndarray:
  """Class ids `[n]` -> label token rows `[n, L]` (unknown ids: EOS only)."""
  class_ids = np.asarray(class_ids)
  known = (class_ids >= 0) & (class_ids < len(table) - 1)
  return table[np.where(known, class_ids, len(table) - 1)]


def compile_classify(model: EncoderDecoderModel, mesh: Mesh,
                     param_shardings: Any) -> Callable[..., jax.Array]:
  """`classify(params, batch) -> class ids [b]`, jitted with shardings."""
  return partitioned.compile_model_fn(model.classify_batch, mesh,
                                      param_shardings)


def label_predict_fn(classify: Callable[..., jax.Array],
                     task: seqio.Task,
                     table: Optional[np.ndarray] = None) -> PredictFn:
  """A `predict_batch`-shaped function for `task`: `(tokens [b, L], None)`."""
  table = label_token_table(task) if table is None else table

  def predict(params: Any, batch: Mapping[str, np.ndarray]):
    ids = np.asarray(distributed.gather(classify(params, batch)))
    return ids_to_label_tokens(ids, table), None
  return predict


def check_classifier_tasks(model: EncoderDecoderModel,
                           tasks: Sequence[seqio.Task]) -> list[str]:
  """Raises unless every task's labels fit the head; returns notes.

  Each task needs a closed label set with at most `num_classes` labels (one
  head serves a mixture: every task's ids index the same logits).
  """
  num_classes = int(getattr(model.module, "num_classes", 0) or 0)
  if num_classes <= 0:
    raise errors.ConfigError(
        "objective='classification' needs a classification head: include "
        "prompts/deep_prompt.gin (or prompts/deep_and_soft_prompt.gin) and "
        "set --gin.NUM_CLASSES to the number of labels.")
  notes = []
  for task in tasks:
    names = class_names(task)
    if len(names) > num_classes:
      raise errors.ConfigError(
          f"{task.name} has {len(names)} labels {list(names)} but the head "
          f"has NUM_CLASSES={num_classes}; set --gin.NUM_CLASSES="
          f"{len(names)} or more.")
    notes.append(f"{task.name}: class ids 0..{len(names) - 1} are "
                 f"{list(names)} (head of {num_classes} classes).")
  return notes
