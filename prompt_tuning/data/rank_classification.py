"""Rank classification: score every label string, predict the most likely.

Instead of greedy-decoding a label, T5's rank classification asks the model
for the log-likelihood of each candidate target and takes the argmax. Here a
classification task gets a scored twin, registered as `<task>_rank`, that
reads the same data, builds the same inputs and reports the same metrics:

* `expand_choices(labels)` is a dataset preprocessor placed right before
  tokenisation. Each example becomes `len(labels)` consecutive rows, one per
  label string, identical except for `targets` (the label string of that
  row). Every row also carries the example's own target text
  (`rank_gold_targets`), the row's label index (`rank_choice`) and the
  example's position in the split (`rank_example`).
* SeqIO's evaluator scores each row once through the evaluation `score_fn`
  (the summed log-likelihood of the row's target tokens, EOS included);
  nothing is decoded. `prompt_tuning.training.choice_scoring` scores an
  example's rows together, its inputs encoded once
  (`EncoderDecoderModel.score_choices`), with the scores of one full pass
  per row (`EncoderDecoderModel.score_batch`) to float rounding.
* `RankPostprocessor` turns each row into what the base task's own
  postprocessor makes of the gold target, and of the row's label string as
  if the model had emitted it.
* `score_metric(fn)` wraps each of the base task's metric functions as a
  SeqIO score metric (`fn(targets, scores)`): it groups the rows of an
  example, picks the label with the highest log-likelihood (`choose`; ties
  go to the earlier label), and hands the base metric the per-example targets
  and predictions, so CB still reports accuracy and macro-F1, MultiRC F1a and
  exact match grouped by question, AX-g accuracy and gender parity.

`register_variant(task, labels)` registers the twin of any task whose
pipeline is text steps, `seqio.preprocessors.tokenize`, then the standard
tail; `prompt_tuning.data.registration.add_task(..., rank_labels=...)` does
it in the same call as the base task. Variants are for evaluation only (the
rows of one example are all its labels), so training on one, or decoding one
with `prompt_tuning.infer`, is refused.

Rows follow the split's example order; SeqIO's `num_examples` counts rows,
and an example whose rows are cut off at the end is left out of the metrics.
"""

import collections
import functools
import logging
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning import errors
from prompt_tuning.data import postprocessors

_LOG = logging.getLogger(__name__)

SUFFIX = "_rank"
GOLD_FEATURE = "rank_gold_targets"
CHOICE_FEATURE = "rank_choice"
EXAMPLE_FEATURE = "rank_example"

# Label strings of every registered variant, in class-id order (consulted by
# `prompt_tuning.data.labels.label_strings` like the tasks' own tables).
LABELS: dict[str, tuple[str, ...]] = {}


def variant_name(name: str) -> str:
  """`taskless_super_glue_rte_v102` -> `taskless_super_glue_rte_v102_rank`."""
  return f"{name}{SUFFIX}"


def is_variant(name: str) -> bool:
  """Whether `name` is a registered rank-classification variant."""
  return name in LABELS


def _check_labels(labels: Sequence[str], what: str) -> tuple[str, ...]:
  labels = tuple(labels)
  if len(labels) < 2 or not all(isinstance(x, str) and x for x in labels):
    raise errors.ConfigError(
        f"Rank classification of {what} needs at least two non-empty label "
        f"strings, got {labels!r}; pass the task's target strings in class-id "
        "order.")
  if len(set(labels)) != len(labels):
    raise errors.ConfigError(f"Label strings of {what} repeat: {labels!r}; "
                             "each class needs its own target string.")
  return labels


def expand_choices(labels: Sequence[str]) -> Callable[[tf.data.Dataset],
                                                      tf.data.Dataset]:
  """A preprocessor giving each text example one row per label string.

  Args:
    labels: the candidate target strings, in class-id order.

  Returns:
    `fn(dataset)` for a dataset of examples with string `targets` (plus any
    other features); each example becomes `len(labels)` rows: its features
    repeated, `targets` = `labels[j]`, `rank_gold_targets` = the example's
    own target, `rank_choice` = j (int32) and `rank_example` = the example's
    position (int64).
  """
  labels = _check_labels(labels, "a task")
  num = len(labels)
  label_tensor = tf.constant(list(labels))

  def rows(index: tf.Tensor, example: Mapping[str, Any]):
    repeated = tf.nest.map_structure(
        lambda v: tf.repeat(tf.expand_dims(v, 0), num, axis=0), dict(example))
    repeated[GOLD_FEATURE] = repeated["targets"]
    repeated["targets"] = label_tensor
    repeated[CHOICE_FEATURE] = tf.range(num, dtype=tf.int32)
    repeated[EXAMPLE_FEATURE] = tf.fill([num], tf.cast(index, tf.int64))
    return repeated

  def fn(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.enumerate().map(
        rows, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

  return fn


class RankPostprocessor:
  """Postprocesses one scored row for the grouped score metrics.

  Called by SeqIO on each row's target (`targets_pretokenized`, the row's
  label string) with the row's features. Returns a dict: `example` and
  `choice` (where the row belongs), `target` (the base postprocessor's value
  for the example's gold target) and `if_chosen` (its value for this row's
  label string as a prediction).

  Attributes:
    base: the base task's postprocessor (None: texts are compared as is).
    labels: the label strings, in class-id order.
  """

  def __init__(self, base: Optional[Callable[..., Any]],
               labels: Sequence[str]):
    self.base = base
    self.labels = tuple(labels)

  def _apply(self, text: str, example: Mapping[str, Any],
             is_target: bool) -> Any:
    if self.base is None:
      return text
    return self.base(text, example=example, is_target=is_target)

  def __call__(self, output: Any, example: Optional[Mapping[str, Any]] = None,
               is_target: bool = False) -> dict[str, Any]:
    if example is None or EXAMPLE_FEATURE not in example:
      raise ValueError("Rank-classification rows need their features "
                       f"({EXAMPLE_FEATURE}, {CHOICE_FEATURE}, "
                       f"{GOLD_FEATURE}); got {output!r} without them.")
    if not is_target:
      raise ValueError("Rank-classification tasks have score metrics only; "
                       "their rows are scored, never decoded.")
    candidate = postprocessors.as_text(output)
    gold = postprocessors.as_text(example[GOLD_FEATURE])
    gold_view = dict(example, targets_pretokenized=gold)
    return {
        "example": int(example[EXAMPLE_FEATURE]),
        "choice": int(example[CHOICE_FEATURE]),
        "target": self._apply(gold, gold_view, True),
        "if_chosen": self._apply(candidate, example, False),
    }


def choose(scores: Any) -> np.ndarray:
  """Index of the highest log-likelihood per row of `scores` `[n, c]`.

  Ties go to the earlier label (the lower class id). The one decision rule
  of rank classification, shared by the evaluator and
  `prompt_tuning.predict`.
  """
  return np.argmax(np.asarray(scores, dtype=np.float64), axis=-1)


def ranked_predictions(targets: Sequence[Mapping[str, Any]],
                       scores: Sequence[float]) -> tuple[list, list]:
  """Groups scored rows by example and picks each example's best label.

  Args:
    targets: per row, `RankPostprocessor`'s dict.
    scores: per row (same order), the log-likelihood of its label string.

  Returns:
    (targets, predictions), one per complete example in split order: the
    base postprocessor's gold target, and its value for the chosen label.
  """
  if len(targets) != len(scores):
    raise ValueError(f"{len(targets)} scored rows but {len(scores)} scores.")
  groups: dict[int, list[tuple[int, float, Any, Any]]] = (
      collections.defaultdict(list))
  for row, score in zip(targets, scores):
    groups[row["example"]].append(
        (row["choice"], float(score), row["target"], row["if_chosen"]))
  gold, predicted = [], []
  skipped = 0
  num_choices = max(len(g) for g in groups.values()) if groups else 0
  for example in sorted(groups):
    rows = sorted(groups[example], key=lambda r: r[0])
    if [r[0] for r in rows] != list(range(num_choices)):
      skipped += 1  # Cut off by num_examples: not every label was scored.
      continue
    best = int(choose([r[1] for r in rows]))
    gold.append(rows[0][2])
    predicted.append(rows[best][3])
  if skipped:
    _LOG.warning("Rank classification: %d example(s) without a score for "
                    "every label left out (num_examples counts rows).",
                    skipped)
  if not gold:
    raise ValueError("No example has a score for every label; raise "
                     "num_examples to at least the number of labels.")
  return gold, predicted


def _ranked_metric(targets, scores, *, metric_fn):
  gold, predicted = ranked_predictions(targets, scores)
  return metric_fn(gold, predicted)


def score_metric(metric_fn: Callable[..., Mapping[str, Any]]
                 ) -> Callable[..., Mapping[str, Any]]:
  """SeqIO score metric `(targets, scores)` computing `metric_fn`'s values
  `(targets, predictions)` on the rank-classified predictions."""
  return functools.partial(_ranked_metric, metric_fn=metric_fn)


def _tokenize_position(task: seqio.Task) -> int:
  positions = [i for i, p in enumerate(task.preprocessors)
               if p is seqio.preprocessors.tokenize]
  if len(positions) != 1:
    raise errors.ConfigError(
        f"Task {task.name} has no single seqio.preprocessors.tokenize step; "
        "a rank-classification variant expands the text examples right before "
        "it. Register the task with prompt_tuning.data.registration.add_task.")
  return positions[0]


def register_variant(task: seqio.Task | str,
                     labels: Optional[Sequence[str]] = None) -> seqio.Task:
  """Registers (or replaces) `<task>_rank`, the scored twin of a task.

  Args:
    task: a registered classification task (or its name) whose pipeline is
      text steps, `seqio.preprocessors.tokenize`, then the standard tail.
    labels: its target strings in class-id order; default the `class_names`
      of a `prompt_tuning.data.postprocessors.class_id` postprocessor.

  Returns:
    The variant: same source, splits, text steps and output features; rows
    expanded per label before tokenisation; the base metrics as score
    metrics.

  Raises:
    errors.ConfigError: no label set, or a pipeline it cannot expand.
  """
  if isinstance(task, str):
    task = seqio.TaskRegistry.get(task)
  if labels is None:
    keywords = getattr(task.postprocessor, "keywords", None) or {}
    labels = keywords.get("class_names")
    if not labels:
      raise errors.ConfigError(
          f"Task {task.name} has no class_id postprocessor to read its label "
          "strings from; pass labels=(...) in class-id order.")
  labels = _check_labels(labels, task.name)
  position = _tokenize_position(task)
  metric_fns = list(task.predict_metric_fns)
  if not metric_fns:
    raise errors.ConfigError(f"Task {task.name} has no predict metrics to "
                             "rank-classify; give it metric_fns first.")
  preprocessors = list(task.preprocessors)
  preprocessors.insert(position, expand_choices(labels))
  name = variant_name(task.name)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  variant = seqio.TaskRegistry.add(
      name,
      source=task.source,
      output_features=task.output_features,
      preprocessors=preprocessors,
      postprocess_fn=RankPostprocessor(task.postprocessor, labels),
      metric_fns=[score_metric(fn) for fn in metric_fns],
  )
  LABELS[name] = labels
  return variant


def check_not_training(tasks: Sequence[seqio.Task]) -> None:
  """Refuses to train on a rank variant (its rows are every label)."""
  for task in tasks:
    if is_variant(task.name):
      base = task.name[:-len(SUFFIX)]
      raise errors.ConfigError(
          f"{task.name} is a rank-classification evaluation variant (one row "
          f"per label); train on {base!r} and evaluate with "
          f"--gin.EVAL_MIXTURE_OR_TASK_NAME=\"'{task.name}'\".")


def check_not_decoding(tasks: Sequence[seqio.Task]) -> None:
  """Refuses to decode a rank variant (`prompt_tuning.infer`)."""
  for task in tasks:
    if is_variant(task.name):
      raise errors.ConfigError(
          f"{task.name} is a rank-classification variant: its rows are "
          "scored, not decoded. Run prompt_tuning.evaluate on it, or infer "
          f"on {task.name[:-len(SUFFIX)]!r}.")
