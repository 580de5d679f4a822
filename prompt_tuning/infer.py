r"""Decode a task's split with a trained prompt, from gin files.

  python -m prompt_tuning.infer \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --gin_file=runs/prompt_infer.gin \
    --gin.MODEL_DIR="'/tmp/rte_prompt'" \
    --gin.MIXTURE_OR_TASK_NAME="'taskless_super_glue_rte_v102'" \
    --gin.INITIAL_CHECKPOINT_PATH="'/ckpts/t5_1_1_lm100k_base/checkpoint_1100000'"

Writes `<INFER_OUTPUT_DIR>/<task>-<split>.jsonl` (default MODEL_DIR/infer)
and, for SuperGLUE test splits, the leaderboard submission files.
"""

import sys
from typing import Sequence

import gin

from prompt_tuning import gin_utils
from prompt_tuning.training import inference


def main(argv: Sequence[str]) -> int:
  files, bindings, search, rest = gin_utils.split_gin_args(argv)
  if rest or not files:
    raise SystemExit(__doc__)
  gin_utils.parse_gin(files, bindings, search)
  for name, path in gin.get_configurable(inference.infer)().items():
    print(f"{name}: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
