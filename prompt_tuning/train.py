r"""Train a prompt (or a whole model) from gin files, T5X style.

  python -m prompt_tuning.train \
    --gin_file=models/t5_1_1_base.gin \
    --gin_file=prompts/from_class_labels.gin \
    --gin_file=runs/prompt_finetune.gin \
    --gin.MODEL_DIR="'/tmp/rte_prompt'" \
    --gin.MIXTURE_OR_TASK_NAME="'taskless_super_glue_rte_v102'" \
    --gin.INITIAL_CHECKPOINT_PATH="'/ckpts/t5_1_1_lm100k_base/checkpoint_1100000'" \
    --gin.CLASS_LABELS="('entailment', 'not_entailment')"

Re-running the same command after an interruption resumes from the latest
checkpoint in MODEL_DIR. The configured gin is written to
MODEL_DIR/config.gin.
"""

import os
import sys
from typing import Sequence

import gin

from prompt_tuning import gin_utils
from prompt_tuning.training import trainer


def main(argv: Sequence[str]) -> int:
  files, bindings, search, rest = gin_utils.split_gin_args(argv)
  if rest:
    raise SystemExit(f"Unknown arguments {rest}; use --gin_file and "
                     "--gin.NAME=VALUE.")
  if not files:
    raise SystemExit(__doc__)
  gin_utils.parse_gin(files, bindings, search)
  model_dir = gin_utils.query_macro("MODEL_DIR")
  train = gin.get_configurable(trainer.train)
  if isinstance(model_dir, str):
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.gin"), "w") as f:
      f.write(gin.config_str())
  result = train()
  print({k: round(v, 4) for k, v in result.metrics.items()})
  for step, metrics in sorted(result.eval_results.items()):
    print(f"eval step {step}: {metrics}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
