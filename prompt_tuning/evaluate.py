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
from typing import Sequence

from prompt_tuning import cli


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (without the program name)."""
  args = cli.parse_gin_command(argv, __doc__)
  # pylint: disable=g-import-not-at-top  (after the start-up logs are quiet)
  import gin
  from prompt_tuning.training import evaluation
  # pylint: enable=g-import-not-at-top
  results = gin.get_configurable(evaluation.evaluate)(
      validate_only=args.validate_only)
  if args.validate_only:
    print("Configuration valid; nothing loaded or written.")
  for task, metrics in results.items():
    print(task, json.dumps(metrics, default=str))
  return 0


if __name__ == "__main__":
  cli.run(main)
