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

from typing import Sequence

from prompt_tuning import cli


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (without the program name)."""
  args = cli.parse_gin_command(argv, __doc__)
  # pylint: disable=g-import-not-at-top  (after the start-up logs are quiet)
  import gin
  from prompt_tuning.training import inference
  # pylint: enable=g-import-not-at-top
  written = gin.get_configurable(inference.infer)(
      validate_only=args.validate_only)
  if args.validate_only:
    print("Configuration valid; nothing loaded or written.")
  for name, path in written.items():
    print(f"{name}: {path}")
  return 0


if __name__ == "__main__":
  cli.run(main)
