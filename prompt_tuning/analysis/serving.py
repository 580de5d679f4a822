"""Multi-task serving: one frozen model, one prompt per task, mixed batches.

Each task's prompt is a slot of a bank; examples of all tasks are
interleaved round-robin into shared batches, each carrying its task's slot
as `prompt_index`, and decoded greedily together. Records have the fields
`prompt_tuning.training.inference` writes, so outputs can be compared line
for line with serving each task alone.
"""

import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import seqio

from prompt_tuning import partitioning
from prompt_tuning.analysis import bank
from prompt_tuning.analysis import task_examples as task_lib
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import inference


def interleave(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Round-robin order over tasks of the given sizes.

  Returns:
    (task id `[sum(sizes)]`, index within its task `[sum(sizes)]`).
  """
  task_ids, positions = [], []
  for i in range(max(sizes, default=0)):
    for t, size in enumerate(sizes):
      if i < size:
        task_ids.append(t)
        positions.append(i)
  return np.asarray(task_ids, np.int32), np.asarray(positions, np.int64)


def serve_mixed(model: EncoderDecoderModel, base_params: Any,
                prompts: Mapping[str, np.ndarray],
                feature_lengths: Mapping[str, int], batch_size: int,
                split: str = "validation",
                num_examples: Optional[int] = None,
                mesh: Optional[Any] = None) -> dict[str, list[dict[str, Any]]]:
  """Decodes several tasks' examples in shared batches, each with its prompt.

  Args:
    model: a prompt model (placement etc. are kept; the bank replaces the
      prompt).
    base_params: the frozen parameters.
    prompts: `{task name: prompt [p, e]}`; all of one shape.
    feature_lengths: `{'inputs': ..., 'targets': ...}`, shared by all tasks.
    batch_size: rows per pass (a multiple of the mesh's data axis).
    split: split of every task.
    num_examples: first N examples of each task.
    mesh: default `partitioning.create_mesh()`.

  Returns:
    `{task: [record per example, dataset order]}` with `index`, `idx`,
    `inputs`, `prediction`, `postprocessed` and `target` (the postprocessed
    target, as SeqIO's evaluator forms it; see `task_metrics`).
  """
  names = list(prompts)
  stacked = bank.stack_prompts([prompts[n] for n in names])
  bank_m = bank.bank_model(model, len(names), prompt_length=stacked.shape[1])
  params = bank.with_prompt(base_params, stacked)
  predictor = bank.BankPredictor(bank_m, mesh or partitioning.create_mesh(),
                                 feature_lengths["targets"])
  loaded = [task_lib.load_task_examples(n, feature_lengths, split,
                                        num_examples) for n in names]
  task_ids, positions = interleave([len(t) for t in loaded])
  inputs = np.stack([loaded[t].features["encoder_input_tokens"][i]
                     for t, i in zip(task_ids, positions)])
  tokens, _ = predictor(params, {"encoder_input_tokens": inputs}, task_ids,
                        batch_size)
  outputs: dict[str, list[dict[str, Any]]] = {n: [None] * len(t) for n, t in
                                              zip(names, loaded)}
  targets = [task_lib.targets(t) for t in loaded]
  for row, t, i in zip(tokens.tolist(), task_ids.tolist(),
                       positions.tolist()):
    examples = loaded[t]
    example = examples.examples[i]
    text = task_lib.decode_tokens(task_lib.target_vocabulary(examples.task),
                                  row)
    outputs[names[t]][i] = {
        "index": i,
        "idx": inference.to_json_value(example.get("idx")),
        "inputs": inference.to_json_value(
            example.get("inputs_pretokenized", b"")),
        "prediction": text,
        "postprocessed": inference.to_json_value(
            task_lib.postprocess(examples.task, text, example)),
        "target": inference.to_json_value(targets[t][i]),
    }
  return outputs


def task_metrics(outputs: Mapping[str, Sequence[Mapping[str, Any]]]
                 ) -> dict[str, dict[str, float]]:
  """`{task: {metric: value}}` of `serve_mixed`'s records (0-100 scale)."""
  return {name: task_lib.predict_metrics(
      seqio.get_mixture_or_task(name), [r["target"] for r in records],
      [r["postprocessed"] for r in records])
          for name, records in outputs.items()}


def write_records(outputs: Mapping[str, Sequence[Mapping[str, Any]]],
                  output_dir: str, split: str) -> dict[str, str]:
  """Writes `<output_dir>/<task>-<split>.jsonl` per task; returns the paths."""
  os.makedirs(output_dir, exist_ok=True)
  paths = {}
  for name, records in outputs.items():
    path = os.path.join(output_dir, f"{name}-{split}.jsonl")
    with open(path, "w") as f:
      for record in records:
        f.write(json.dumps(record) + "\n")
    paths[name] = path
  return paths
