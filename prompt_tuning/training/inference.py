"""Inference: decode a task's split into one record per example.

`predict_task(...)` yields `{"index", "idx", "inputs", "prediction",
"postprocessed"}` per example in dataset order; the entry point
(`prompt_tuning.infer`) writes them to `<output_dir>/<task>-<split>.jsonl`
and, for SuperGLUE test splits, the leaderboard files
(`data.super_glue_submission`).

A model with `objective='classification'` predicts through its head: each
record's `prediction` is the label string of the head's class id
(`class_predictions`), postprocessed by the task as a decoded one would be.
"""

from typing import Any, Iterator, Mapping

import jax
import numpy as np
import seqio

from prompt_tuning.training import data
from prompt_tuning.training import length_buckets as buckets_lib


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


def tasks_of(name: str) -> list[seqio.Task]:
  """The tasks of a task or mixture name."""
  task = data.get_task(name)
  return list(task.tasks) if isinstance(task, seqio.Mixture) else [task]


def predict_task(task: seqio.Task, predict, params: Any,
                 feature_lengths: Mapping[str, int], batch_size: int,
                 split: str,
                 length_buckets: buckets_lib.Spec = buckets_lib.DEFAULT_SPEC
                 ) -> Iterator[dict[str, Any]]:
  """Yields one record per example of `task`'s `split`, in dataset order.

  `length_buckets` (`training.length_buckets`) batches the examples by
  input length and cuts each batch's inputs to a bucket length; the decode
  length stays `feature_lengths['targets']`. Without buckets the records
  stream out batch by batch; with them, once every batch is decoded (a
  batch holds examples from anywhere in the split).
  """
  bucketer = buckets_lib.Bucketer(length_buckets, cut_targets=False)
  by_length = length_buckets is not None
  ds = task.get_dataset(dict(feature_lengths), split=split, shuffle=False,
                        num_epochs=1, use_cached=False)
  examples = list(ds.as_numpy_iterator())
  model_ds = data.feature_converter()(ds, dict(feature_lengths)).enumerate()
  vocab = task.output_features["targets"].vocabulary

  def record(index: int, row: list[int]) -> dict[str, Any]:
    example = examples[index]
    if vocab.eos_id in row:
      row = row[:row.index(vocab.eos_id)]
    text = vocab.decode(row)
    return {
        "index": index,
        "idx": to_json_value(example.get("idx")),
        "inputs": to_json_value(example.get("inputs_pretokenized", b"")),
        "prediction": text,
        "postprocessed": to_json_value(task.postprocess_fn(
            text, example=example, is_target=False)),
    }

  decoded = {}
  for indices, batch, n in data.numpy_batches(model_ds, batch_size,
                                              by_length=by_length):
    tokens = np.asarray(jax.device_get(predict(params, bucketer(batch))[0]))[:n]
    decoded.update(zip(indices[:n].tolist(), tokens.tolist()))
    if not by_length:  # Batches come in dataset order: stream them.
      for index in sorted(decoded):
        yield record(index, decoded.pop(index))
  for index in sorted(decoded):
    yield record(index, decoded[index])
