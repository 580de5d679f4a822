"""Inference: decode a task's split to JSONL, and SuperGLUE submissions.

`infer(...)` writes `<output_dir>/<task>-<split>.jsonl`, one line per
example: `{"index", "inputs", "prediction", "postprocessed"}` (and the
example's `idx`). For the SuperGLUE test splits it also writes the
leaderboard's submission file (`RTE.jsonl`, `BoolQ.jsonl`, `AX-b.jsonl`, ...
with `{"idx", "label"}` lines; MultiRC nested by paragraph and question).

A model with `objective='classification'` predicts through its head: each
record's `prediction` is the label string of the head's class id
(`class_predictions`), postprocessed by the task as a decoded one would be.
"""

import collections
import json
import os
from typing import Any, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
import seqio

from prompt_tuning.data import rank_classification
from prompt_tuning.data import super_glue
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import freezing
from prompt_tuning.training import class_predictions
from prompt_tuning.training import data
from prompt_tuning.training import partitioned
from prompt_tuning.training import preflight

# Leaderboard file name and label rendering per SuperGLUE benchmark.
_SUBMISSION_FILES = {
    "boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC",
    "record": "ReCoRD", "rte": "RTE", "wic": "WiC",
    "wsc": "WSC", "axb": "AX-b", "axg": "AX-g",
}
_CLASS_LABELS = {
    "boolq": ("false", "true"), "wic": ("false", "true"),
    "wsc": ("false", "true"),
    "cb": ("entailment", "contradiction", "neutral"),
    "rte": ("entailment", "not_entailment"),
    "axb": ("entailment", "not_entailment"),
    "axg": ("entailment", "not_entailment"),
}


def to_json_value(value: Any) -> Any:
  """Numpy scalars/arrays and bytes (nested too) as plain JSON values."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, Mapping):
    return {k: to_json_value(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json_value(v) for v in value]
  return value


def _tasks(name: str) -> list[seqio.Task]:
  task = data.get_task(name)
  return list(task.tasks) if isinstance(task, seqio.Mixture) else [task]


def predict_task(task: seqio.Task, predict, params: Any,
                 feature_lengths: Mapping[str, int], batch_size: int,
                 split: str) -> Iterator[dict[str, Any]]:
  """Yields one record per example of `task`'s `split`, in dataset order."""
  ds = task.get_dataset(dict(feature_lengths), split=split, shuffle=False,
                        num_epochs=1, use_cached=False)
  examples = list(ds.as_numpy_iterator())
  model_ds = data.feature_converter()(ds, dict(feature_lengths)).enumerate()
  vocab = task.output_features["targets"].vocabulary
  for indices, batch, n in data.numpy_batches(model_ds, batch_size):
    tokens = np.asarray(jax.device_get(predict(params, batch)[0]))[:n]
    for index, row in zip(indices[:n].tolist(), tokens.tolist()):
      example = examples[index]
      if vocab.eos_id in row:
        row = row[:row.index(vocab.eos_id)]
      text = vocab.decode(row)
      yield {
          "index": index,
          "idx": to_json_value(example.get("idx")),
          "inputs": to_json_value(example.get("inputs_pretokenized", b"")),
          "prediction": text,
          "postprocessed": to_json_value(task.postprocess_fn(
              text, example=example, is_target=False)),
      }


def submission_lines(benchmark: str,
                     records: Sequence[Mapping[str, Any]]) -> list[dict]:
  """SuperGLUE leaderboard lines for one benchmark's test predictions."""
  if benchmark == "multirc":
    grouped = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in records:
      idx, value = r["idx"], r["postprocessed"]
      label = value.get("value", value) if isinstance(value, dict) else value
      grouped[idx["paragraph"]][idx["question"]].append(
          {"idx": idx["answer"], "label": int(label == 1)})
    return [{"idx": p, "passage": {"questions": [
        {"idx": q, "answers": answers} for q, answers in sorted(qs.items())]}}
            for p, qs in sorted(grouped.items())]
  if benchmark == "record":
    return [{"idx": r["idx"]["query"] if isinstance(r["idx"], dict)
             else r["idx"], "label": r["prediction"]} for r in records]
  lines = []
  for r in records:
    value = r["postprocessed"]
    if benchmark == "copa":
      label = int(value) if value in (0, 1) else 0
    else:
      names = _CLASS_LABELS[benchmark]
      label = names[value] if isinstance(value, int) and 0 <= value < len(
          names) else names[-1]  # Unparseable: the last class.
    lines.append({"idx": r["idx"], "label": label})
  return lines


def infer(*, model: EncoderDecoderModel, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int], batch_size: int,
          model_dir: Optional[str], initial_checkpoint_path: Optional[str],
          output_dir: Optional[str] = None, split: str = "test",
          checkpoint_step: Optional[int] = None,
          trainable_patterns: Sequence[str] = freezing.PROMPT_PATTERNS,
          num_partitions: int = 1,
          allow_all_trainable: bool = False,
          validate_only: bool = False) -> dict[str, str]:
  """Decodes every task of `mixture_or_task_name`; returns written paths.

  Settings, data and paths are checked first (`preflight.check_eval_run`);
  `validate_only` stops there, returning `{}`.
  """
  preflight.check_eval_run(
      model=model, mixture_or_task_name=mixture_or_task_name,
      task_feature_lengths=task_feature_lengths, batch_size=batch_size,
      model_dir=model_dir, initial_checkpoint_path=initial_checkpoint_path,
      split=split, checkpoint_step=checkpoint_step,
      trainable_patterns=trainable_patterns,
      allow_all_trainable=allow_all_trainable)
  task = data.get_task(mixture_or_task_name)
  rank_classification.check_not_decoding(getattr(task, "tasks", [task]))
  if validate_only:
    return {}
  from prompt_tuning.training import trainer  # pylint: disable=g-import-not-at-top
  output_dir = output_dir or os.path.join(model_dir or ".", "infer")
  os.makedirs(output_dir, exist_ok=True)
  trained = trainer.load_trained_params(
      model, task_feature_lengths, model_dir, initial_checkpoint_path,
      trainable_patterns, checkpoint_step, num_partitions=num_partitions,
      allow_all_trainable=allow_all_trainable)
  predict = partitioned.compile_model_fn(model.predict_batch, trained.mesh,
                                         trained.param_shardings)
  classify = None
  if model.is_classifier:
    classify = class_predictions.compile_classify(model, trained.mesh,
                                                  trained.param_shardings)
  written = {}
  for task in _tasks(mixture_or_task_name):
    task_predict = predict if classify is None else (
        class_predictions.label_predict_fn(classify, task))
    records = list(predict_task(task, task_predict, trained.params,
                                task_feature_lengths, batch_size, split))
    path = os.path.join(output_dir, f"{task.name}-{split}.jsonl")
    with open(path, "w") as f:
      for r in records:
        f.write(json.dumps(r) + "\n")
    written[task.name] = path
    benchmark = None
    try:
      benchmark = super_glue.benchmark_of(task.name)
    except KeyError:  # Not a SuperGLUE task.
      pass
    if split == "test" and benchmark in _SUBMISSION_FILES:
      path = os.path.join(output_dir, f"{_SUBMISSION_FILES[benchmark]}.jsonl")
      with open(path, "w") as f:
        for line in submission_lines(benchmark, records):
          f.write(json.dumps(line) + "\n")
      written[f"{task.name}:submission"] = path
  return written
