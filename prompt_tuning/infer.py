r"""Decode a task's split with a trained prompt, from gin files.

  python -m prompt_tuning.infer \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --gin_file=runs/prompt_infer.gin \
    --gin.MODEL_DIR="'/tmp/rte_prompt'" \
    --gin.MIXTURE_OR_TASK_NAME="'taskless_super_glue_rte_v102'" \
    --gin.INITIAL_CHECKPOINT_PATH="'/ckpts/t5_1_1_lm100k_base/checkpoint_1100000'"

Writes `<INFER_OUTPUT_DIR>/<task>-<split>.jsonl` (default MODEL_DIR/infer)
and, for SuperGLUE test splits, the leaderboard submission files. Settings,
data and paths are checked before any weight is loaded.
"""

import json
import os
from typing import Any, Mapping, Optional, Sequence

from prompt_tuning import cli
from prompt_tuning import gin_utils
from prompt_tuning.training import length_buckets as buckets_lib


def infer(*, model: Any, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int], batch_size: int,
          model_dir: Optional[str], initial_checkpoint_path: Optional[str],
          output_dir: Optional[str] = None, split: str = "test",
          checkpoint_step: Optional[int] = None,
          trainable_patterns: Optional[Sequence[str]] = None,
          num_partitions: int = 1,
          allow_all_trainable: bool = False,
          length_buckets: Any = buckets_lib.DEFAULT_SPEC,
          validate_only: bool = False) -> dict[str, str]:
  """Decodes every task of `mixture_or_task_name`; returns written paths.

  Settings, data and paths are checked first (`preflight.check_eval_run`);
  `validate_only` stops there, returning `{}`. Writes
  `<output_dir>/<task>-<split>.jsonl` (`training.inference.predict_task`'s
  records) and, for SuperGLUE test splits, the leaderboard file
  (`data.super_glue_submission`). Arguments as `evaluate.evaluate`'s.
  """
  # pylint: disable=g-import-not-at-top  (JAX after the start-up logs)
  from prompt_tuning.data import rank_classification
  from prompt_tuning.data import super_glue
  from prompt_tuning.data import super_glue_submission
  from prompt_tuning.training import class_predictions
  from prompt_tuning.training import data
  from prompt_tuning.training import inference
  from prompt_tuning.training import partitioned
  from prompt_tuning.training import preflight
  from prompt_tuning.training import run_dir
  from prompt_tuning.training import state
  # pylint: enable=g-import-not-at-top
  output_dir = output_dir or os.path.join(model_dir or ".", "infer")
  split_params = preflight.check_eval_run(
      model=model, mixture_or_task_name=mixture_or_task_name,
      task_feature_lengths=task_feature_lengths, batch_size=batch_size,
      model_dir=model_dir, initial_checkpoint_path=initial_checkpoint_path,
      split=split, checkpoint_step=checkpoint_step,
      trainable_patterns=trainable_patterns,
      allow_all_trainable=allow_all_trainable, output_dir=output_dir,
      output_setting="INFER_OUTPUT_DIR")
  task = data.get_task(mixture_or_task_name)
  rank_classification.check_not_decoding(getattr(task, "tasks", [task]))
  buckets_lib.check_spec(length_buckets, task_feature_lengths)
  if validate_only:
    return {}
  os.makedirs(output_dir, exist_ok=True)
  trained = state.load_trained_params(
      model, task_feature_lengths, model_dir, initial_checkpoint_path,
      split_params, checkpoint_step, num_partitions=num_partitions)
  predict = partitioned.compile_model_fn(model.predict_batch, trained.mesh,
                                         trained.param_shardings)
  classify = None
  if model.is_classifier:
    classify = class_predictions.compile_classify(model, trained.mesh,
                                                  trained.param_shardings)
  written = {}
  for task in inference.tasks_of(mixture_or_task_name):
    task_predict = predict if classify is None else (
        class_predictions.label_predict_fn(classify, task))
    records = list(inference.predict_task(
        task, task_predict, trained.params, task_feature_lengths, batch_size,
        split, length_buckets))
    path = os.path.join(output_dir, f"{task.name}-{split}.jsonl")
    run_dir.write_atomically(path, "".join(json.dumps(r) + "\n"
                                           for r in records))
    written[task.name] = path
    benchmark = None
    try:
      benchmark = super_glue.benchmark_of(task.name)
    except KeyError:  # Not a SuperGLUE task.
      pass
    files = super_glue_submission.SUBMISSION_FILES
    if split == "test" and benchmark in files:
      path = os.path.join(output_dir, f"{files[benchmark]}.jsonl")
      run_dir.write_atomically(path, "".join(
          json.dumps(line) + "\n" for line in
          super_glue_submission.submission_lines(benchmark, records)))
      written[f"{task.name}:submission"] = path
  return written


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (without the program name)."""
  args = gin_utils.parse_gin_command(argv, __doc__)
  # pylint: disable=g-import-not-at-top  (gin registered this module's
  # `infer` under its import name, not `__main__`)
  import gin
  from prompt_tuning import infer as this
  # pylint: enable=g-import-not-at-top
  written = gin.get_configurable(this.infer)(
      validate_only=args.validate_only)
  if args.validate_only:
    print("Configuration valid; nothing loaded or written.")
  for name, path in written.items():
    print(f"{name}: {path}")
  return 0


if __name__ == "__main__":
  cli.run(main)
