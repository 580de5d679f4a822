r"""Evaluate a trained prompt (or model) on a task's split, from gin files.

  python -m prompt_tuning.evaluate \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --gin_file=runs/prompt_eval.gin \
    --gin.MODEL_DIR="'/tmp/rte_prompt'" \
    --gin.MIXTURE_OR_TASK_NAME="'taskless_super_glue_rte_v102'" \
    --gin.INITIAL_CHECKPOINT_PATH="'/ckpts/t5_1_1_lm100k_base/checkpoint_1100000'"

Restores the frozen base from INITIAL_CHECKPOINT_PATH and the trained
parameters from MODEL_DIR's latest checkpoint (or CHECKPOINT_STEP), runs
SeqIO's evaluator (greedy decoding for predict metrics, scoring for
rank-classification metrics) and writes `<EVAL_OUTPUT_DIR>/metrics.json`
plus SeqIO's per-task JSONL and TensorBoard logs. Settings, data and paths
are checked before any weight is loaded.
"""

import json
import os
from typing import Any, Mapping, Optional, Sequence

from prompt_tuning import cli
from prompt_tuning import gin_utils
from prompt_tuning.training import length_buckets as buckets_lib


def evaluate(*, model: Any, mixture_or_task_name: str,
             task_feature_lengths: Mapping[str, int], batch_size: int,
             model_dir: Optional[str], initial_checkpoint_path: Optional[str],
             output_dir: Optional[str] = None,
             checkpoint_step: Optional[int] = None, split: str = "validation",
             trainable_patterns: Optional[Sequence[str]] = None,
             num_examples: Optional[int] = None, num_partitions: int = 1,
             allow_all_trainable: bool = False,
             length_buckets: Any = buckets_lib.DEFAULT_SPEC,
             validate_only: bool = False) -> dict[str, Any]:
  """Returns `{task: {metric: value}}` and writes it to output_dir.

  Settings, data and paths are checked first (`preflight.check_eval_run`);
  `validate_only` stops there, returning `{}`. The parameters come from
  `training.state.load_trained_params` (frozen base read straight into its
  shardings, the run's trained parameters restored); `training.evaluation`
  runs SeqIO's evaluator on them.

  Args:
    model: an `EncoderDecoderModel` (gin's MODEL).
    mixture_or_task_name: what to evaluate.
    task_feature_lengths: `{'inputs', 'targets'}`.
    batch_size: evaluation batch size.
    model_dir: the training run; None evaluates the untrained model.
    initial_checkpoint_path: the frozen base.
    output_dir: default `model_dir/eval`.
    checkpoint_step: default the latest.
    split: the split.
    trainable_patterns: None: what the model declares (as the run trained).
    num_examples: the first N examples only.
    num_partitions: the mesh's `model` axis.
    allow_all_trainable: a full fine-tuning run (runs/model_finetune.gin).
    length_buckets: an int or a dict of bucket lengths (default
      `length_buckets.DEFAULT_SPEC`), None for fixed shapes
      (`training.length_buckets`, gin's LENGTH_BUCKETS).
    validate_only: run the checks only.
  """
  # pylint: disable=g-import-not-at-top  (JAX after the start-up logs)
  from prompt_tuning.training import evaluation
  from prompt_tuning.training import preflight
  from prompt_tuning.training import state
  # pylint: enable=g-import-not-at-top
  output_dir = output_dir or os.path.join(model_dir or ".", "eval")
  split_params = preflight.check_eval_run(
      model=model, mixture_or_task_name=mixture_or_task_name,
      task_feature_lengths=task_feature_lengths, batch_size=batch_size,
      model_dir=model_dir, initial_checkpoint_path=initial_checkpoint_path,
      split=split, checkpoint_step=checkpoint_step,
      trainable_patterns=trainable_patterns,
      allow_all_trainable=allow_all_trainable, output_dir=output_dir,
      output_setting="EVAL_OUTPUT_DIR")
  buckets_lib.check_spec(length_buckets, task_feature_lengths)
  if validate_only:
    return {}
  trained = state.load_trained_params(
      model, task_feature_lengths, model_dir, initial_checkpoint_path,
      split_params, checkpoint_step, num_partitions=num_partitions)
  run = evaluation.Evaluation(
      mixture_or_task_name, model, trained.mesh, trained.param_shardings,
      batch_size=batch_size, feature_lengths=task_feature_lengths,
      split=split, log_dir=output_dir, num_examples=num_examples,
      length_buckets=length_buckets)
  results = run(trained.params, trained.step)
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump({"step": trained.step, "split": split, "results": results}, f,
              indent=2, default=str)
  return results


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (without the program name)."""
  args = gin_utils.parse_gin_command(argv, __doc__)
  # pylint: disable=g-import-not-at-top  (gin registered this module's
  # `evaluate` under its import name, not `__main__`)
  import gin
  from prompt_tuning import evaluate as this
  # pylint: enable=g-import-not-at-top
  results = gin.get_configurable(this.evaluate)(
      validate_only=args.validate_only)
  if args.validate_only:
    print("Configuration valid; nothing loaded or written.")
  for task, metrics in results.items():
    print(task, json.dumps(metrics, default=str))
  return 0


if __name__ == "__main__":
  cli.run(main)
