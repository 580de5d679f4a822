"""The official SuperGLUE / GLUE / SQuAD metrics, in percent.

Metric functions take `(targets, predictions)` as produced by
`prompt_tuning.data.postprocessors` and return `{name: value}` with values
on a 0-100 scale, as the papers report them. A prediction of -1 (text that is
none of the labels) is always wrong: it never equals a target; binary F1
scores it as the class opposite to the target and Matthews correlation as a
class of its own, as T5 does.
"""

import collections
import re
import string
from typing import Any, Mapping, Sequence

import numpy as np

from prompt_tuning.data import super_glue_schema
from prompt_tuning.data.postprocessors import INVALID

# The eight tasks averaged into the SuperGLUE score (AX-b/AX-g are not).
SUPER_GLUE_SCORED = super_glue_schema.SCORED


def _as_arrays(targets, predictions) -> tuple[np.ndarray, np.ndarray]:
  targets = np.asarray(targets, dtype=np.int64)
  predictions = np.asarray(predictions, dtype=np.int64)
  if targets.shape != predictions.shape:
    raise ValueError(f"{targets.shape[0]} targets but "
                     f"{predictions.shape[0]} predictions.")
  if targets.size == 0:
    raise ValueError("No examples to score.")
  return targets, predictions


def _wrong_when_invalid(targets: np.ndarray,
                        predictions: np.ndarray) -> np.ndarray:
  """Binary predictions with each invalid one replaced by the wrong class."""
  return np.where(np.isin(predictions, (0, 1)), predictions, 1 - targets)


def accuracy(targets: Sequence[int],
             predictions: Sequence[int]) -> dict[str, float]:
  """Percentage of predictions equal to their (valid) target."""
  targets, predictions = _as_arrays(targets, predictions)
  correct = (predictions == targets) & (predictions != INVALID)
  return {"accuracy": 100.0 * correct.mean()}


def _f1(tp: float, fp: float, fn: float) -> float:
  """F1 from counts; 0 when it is undefined (no positives at all)."""
  denominator = 2 * tp + fp + fn
  return 2 * tp / denominator if denominator else 0.0


def macro_f1(targets: Sequence[int], predictions: Sequence[int],
             num_classes: int) -> dict[str, float]:
  """Unweighted mean over classes of one-vs-rest F1 (CB's official F1)."""
  targets, predictions = _as_arrays(targets, predictions)
  scores = []
  for c in range(num_classes):
    tp = np.sum((predictions == c) & (targets == c))
    fp = np.sum((predictions == c) & (targets != c))
    fn = np.sum((predictions != c) & (targets == c))
    scores.append(_f1(tp, fp, fn))
  return {"macro_f1": 100.0 * float(np.mean(scores))}


def binary_f1(targets: Sequence[int],
              predictions: Sequence[int]) -> dict[str, float]:
  """F1 of the positive class (1), as GLUE reports it for MRPC/QQP."""
  targets, predictions = _as_arrays(targets, predictions)
  predictions = _wrong_when_invalid(targets, predictions)
  tp = np.sum((predictions == 1) & (targets == 1))
  fp = np.sum((predictions == 1) & (targets == 0))
  fn = np.sum((predictions == 0) & (targets == 1))
  return {"f1": 100.0 * _f1(tp, fp, fn)}


def matthews_corrcoef(targets: Sequence[int],
                      predictions: Sequence[int]) -> dict[str, float]:
  """Matthews correlation (AX-b, CoLA) as scikit-learn computes it; in %.

  Multiclass MCC over the confusion matrix of every value that occurs in
  either list, so an unparseable prediction (-1) is a class of its own, as in
  T5 (which calls scikit-learn), not the class opposite to the target. 0 when
  undefined (all targets or all predictions one class).

  With `t_k`/`p_k` how often class k is the target/prediction, `c` the
  correct predictions and `s` the examples:
  `(c*s - sum t_k p_k) / sqrt((s^2 - sum p_k^2) (s^2 - sum t_k^2))`.
  """
  targets, predictions = _as_arrays(targets, predictions)
  classes = np.union1d(targets, predictions)
  true_counts = np.array([np.sum(targets == k) for k in classes], np.float64)
  predicted_counts = np.array([np.sum(predictions == k) for k in classes],
                              np.float64)
  correct = float(np.sum(targets == predictions))
  total = float(targets.size)
  numerator = correct * total - float(true_counts @ predicted_counts)
  denominator = np.sqrt((total**2 - float(predicted_counts @ predicted_counts))
                        * (total**2 - float(true_counts @ true_counts)))
  mcc = numerator / denominator if denominator else 0.0
  return {"matthews_corrcoef": 100.0 * mcc}


def _float_arrays(targets, predictions) -> tuple[np.ndarray, np.ndarray]:
  targets = np.asarray(targets, dtype=np.float64).reshape(-1)
  predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
  if targets.shape != predictions.shape:
    raise ValueError(f"{targets.size} targets but {predictions.size} "
                     "predictions.")
  if targets.size < 2:
    raise ValueError("A correlation needs at least 2 examples.")
  return targets, predictions


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson's r; NaN when either side is constant (undefined)."""
  x, y = x - x.mean(), y - y.mean()
  denominator = np.sqrt((x @ x) * (y @ y))
  return float(x @ y / denominator) if denominator else float("nan")


def average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks of `values` ([n]), ties given the mean of their ranks."""
  values = np.asarray(values, dtype=np.float64)
  order = np.argsort(values, kind="stable")
  ranks = np.empty(values.size, np.float64)
  ranks[order] = np.arange(1, values.size + 1, dtype=np.float64)
  _, groups = np.unique(values, return_inverse=True)
  sums = np.bincount(groups, weights=ranks)
  counts = np.bincount(groups)
  return (sums / counts)[groups]


def pearson_corrcoef(targets: Sequence[float],
                     predictions: Sequence[float]) -> dict[str, float]:
  """Pearson correlation x 100 (STS-B, as T5 reports it).

  Predictions are the floats the model wrote (-1 for text that is no
  number, as T5's postprocessor gives). NaN when a side is constant.
  """
  targets, predictions = _float_arrays(targets, predictions)
  return {"pearson_corrcoef": 100.0 * _pearson(targets, predictions)}


def spearman_corrcoef(targets: Sequence[float],
                      predictions: Sequence[float]) -> dict[str, float]:
  """Spearman rank correlation x 100 (STS-B): Pearson of the average ranks."""
  targets, predictions = _float_arrays(targets, predictions)
  return {"spearman_corrcoef": 100.0 * _pearson(average_ranks(targets),
                                                average_ranks(predictions))}


def multirc_f1a_and_exact_match(
    targets: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """MultiRC's official pair: F1 over all answers, exact match per question.

  Args:
    targets: `{"value": 0|1, "group": question key}` per answer option.
    predictions: the same, with `value` -1 for an unparseable answer.

  Returns:
    `f1a`: binary F1 over every answer option; `exact_match`: percentage of
    questions whose answer options are all judged correctly.
  """
  values = [t["value"] for t in targets]
  predicted = [p["value"] for p in predictions]
  f1a = binary_f1(values, predicted)["f1"]
  all_right = collections.defaultdict(lambda: True)
  for target, prediction in zip(targets, predictions):
    right = (prediction["value"] == target["value"]
             and prediction["value"] != INVALID)
    all_right[target["group"]] &= right
  exact_match = 100.0 * float(np.mean(list(all_right.values())))
  return {"f1a": f1a, "exact_match": exact_match}


def accuracy_and_gender_parity(
    targets: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """AX-g: accuracy, and the percentage of pairs predicted consistently.

  Args:
    targets: `{"value": class id, "pair": pair key}` per example.
    predictions: the same; `value` -1 for an unparseable answer.

  Returns:
    `accuracy`, and `gender_parity`: the share of minimal pairs whose members
    get the same valid prediction (an unparseable one breaks parity).
  """
  result = accuracy([t["value"] for t in targets],
                    [p["value"] for p in predictions])
  pairs = collections.defaultdict(list)
  for target, prediction in zip(targets, predictions):
    pairs[target["pair"]].append(prediction["value"])
  consistent = [len(set(v)) == 1 and v[0] != INVALID
                for v in pairs.values() if len(v) > 1]
  if not consistent:
    raise ValueError("No complete gender pairs to score parity on.")
  result["gender_parity"] = 100.0 * float(np.mean(consistent))
  return result


def normalize_answer(text: str) -> str:
  """SQuAD's answer normalisation: lower case, no punctuation/articles."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def _token_f1(prediction: str, gold: str) -> float:
  predicted_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(gold).split()
  common = collections.Counter(predicted_tokens) & collections.Counter(
      gold_tokens)
  overlap = sum(common.values())
  if overlap == 0:
    return 0.0
  precision = overlap / len(predicted_tokens)
  recall = overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def squad_f1_and_exact_match(
    targets: Sequence[Sequence[str]],
    predictions: Sequence[str]) -> dict[str, float]:
  """Max-over-gold-answers token F1 and exact match (ReCoRD, SQuAD, MRQA).

  Args:
    targets: per example, all gold answer strings. Examples without any gold
      answer (unlabelled) are left out.
    predictions: per example, the predicted answer string.

  Returns:
    `f1` and `exact_match`, averaged over the examples, in percent.
  """
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} "
                     "predictions.")
  f1s, exact = [], []
  for golds, prediction in zip(targets, predictions):
    golds = list(golds)
    if not golds:
      continue
    f1s.append(max(_token_f1(prediction, g) for g in golds))
    exact.append(max(float(normalize_answer(prediction) == normalize_answer(g))
                     for g in golds))
  if not f1s:
    raise ValueError("No example has a gold answer to score against.")
  return {"f1": 100.0 * float(np.mean(f1s)),
          "exact_match": 100.0 * float(np.mean(exact))}


_TASK_NAME = re.compile(
    r"^(?:taskless_)?super_glue_([a-z]+)_v102(?:_simple_(?:train|eval))?"
    r"(?:_rank)?$")


def _scored_benchmark(name: str):
  if name in SUPER_GLUE_SCORED:
    return name
  match = _TASK_NAME.match(name)
  if match and match.group(1) in SUPER_GLUE_SCORED:
    return match.group(1)
  return None


def _value(metric: Any) -> float:
  return float(getattr(metric, "value", metric))


def super_glue_score(results: Mapping[str, Mapping[str, Any]]) -> float:
  """The SuperGLUE headline number: mean over the 8 tasks of their metrics.

  Each task's score is the mean of its metrics (CB: accuracy and macro F1;
  MultiRC: F1a and exact match; ReCoRD: F1 and exact match; the others:
  accuracy), and the score is the mean of the eight task scores.

  Args:
    results: metrics per task, keyed by benchmark (`boolq`, ..., `wsc`) or by
      registered task name (`taskless_super_glue_boolq_v102`,
      `taskless_super_glue_wsc_v102_simple_eval`, ...; rank-classification
      variants `..._rank` count as their task). Other entries (AX-b,
      AX-g, tasks without metrics) are ignored.

  Returns:
    The score, in the metrics' scale (percent).

  Raises:
    ValueError: a task is missing or present twice.
  """
  per_task = {}
  for name, metrics in results.items():
    benchmark = _scored_benchmark(name)
    if benchmark is None or not metrics:
      continue
    if benchmark in per_task:
      raise ValueError(f"Two result sets for {benchmark}: "
                       f"{per_task[benchmark][0]!r} and {name!r}.")
    per_task[benchmark] = (name, np.mean([_value(v)
                                          for v in metrics.values()]))
  missing = [b for b in SUPER_GLUE_SCORED if b not in per_task]
  if missing:
    raise ValueError(f"SuperGLUE score needs results for {missing}.")
  return float(np.mean([per_task[b][1] for b in SUPER_GLUE_SCORED]))
