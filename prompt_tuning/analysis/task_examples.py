"""A task's split as model-ready arrays, plus decoding and scoring helpers.

The ensembling and multi-task serving tools batch examples themselves (to
replicate them across a prompt bank or mix tasks in one batch), so they need
a task's examples in memory, in dataset order:

  features  `{encoder_input_tokens [N, l], decoder_input_tokens [N, t], ...}`
  examples  the raw SeqIO examples (for postprocessing and targets).
"""

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import seqio

from prompt_tuning.training import data


@dataclasses.dataclass
class TaskExamples:
  """One task's split, in dataset order.

  Attributes:
    task: the SeqIO task.
    examples: preprocessed examples (with `*_pretokenized` text).
    features: model features, each `[N, ...]` int32.
  """
  task: seqio.Task
  examples: list[dict[str, Any]]
  features: dict[str, np.ndarray]

  def __len__(self) -> int:
    return len(self.examples)


def load_task_examples(task_name: str, feature_lengths: Mapping[str, int],
                       split: str = "validation",
                       num_examples: Optional[int] = None) -> TaskExamples:
  """Reads `task_name`'s split (the first `num_examples` if given)."""
  task = data.get_task(task_name)
  if isinstance(task, seqio.Mixture):
    raise ValueError(f"{task_name} is a mixture; give one of its tasks "
                     f"({[t.name for t in task.tasks]}).")
  ds = task.get_dataset(dict(feature_lengths), split=split, shuffle=False,
                        num_epochs=1, use_cached=False)
  if num_examples is not None:
    ds = ds.take(num_examples)
  examples = list(ds.as_numpy_iterator())
  if not examples:
    raise ValueError(f"{task_name} has no {split} examples.")
  converted = data.feature_converter()(ds, dict(feature_lengths))
  rows = list(converted.as_numpy_iterator())
  features = {k: np.stack([r[k] for r in rows]).astype(np.int32)
              for k in data.MODEL_FEATURES if k in rows[0]}
  return TaskExamples(task=task, examples=examples, features=features)


def decode_tokens(vocabulary: seqio.Vocabulary, row: Sequence[int]) -> str:
  """Text of one decoded row, cut at the first EOS."""
  row = [int(t) for t in row]
  if vocabulary.eos_id in row:
    row = row[:row.index(vocabulary.eos_id)]
  return vocabulary.decode(row)


def target_vocabulary(task: seqio.Task) -> seqio.Vocabulary:
  return task.output_features["targets"].vocabulary


def postprocess(task: seqio.Task, text: str, example: Mapping[str, Any],
                is_target: bool = False) -> Any:
  if task.postprocess_fn is None:
    return text
  return task.postprocess_fn(text, example=example, is_target=is_target)


def targets(task_examples: TaskExamples) -> list[Any]:
  """Postprocessed targets of every example, as SeqIO's evaluator forms them."""
  out = []
  for example in task_examples.examples:
    text = example["targets_pretokenized"]
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    out.append(postprocess(task_examples.task, text, example, is_target=True))
  return out


def predict_metrics(task: seqio.Task, target_values: Sequence[Any],
                    predictions: Sequence[Any]) -> dict[str, float]:
  """All of `task`'s predict metrics (0-100 scale), `{metric: value}`."""
  results: dict[str, float] = {}
  for fn in task.predict_metric_fns:
    for name, value in fn(list(target_values), list(predictions)).items():
      results[name] = float(getattr(value, "value", value))
  if not results:
    raise ValueError(f"Task {task.name} has no predict metrics to report.")
  return results
