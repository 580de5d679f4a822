r"""Prompt length × initialiser ablation on one task (paper Figure 3).

  python scripts/prompt_ablation.py \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --gin.DROPOUT_RATE=0.1 \
    --checkpoint=/ckpts/t5_1_1_lm100k_base/checkpoint_1100000 \
    --task=taskless_super_glue_rte_v102 \
    --lengths=1,5,20,100,150 \
    --initializers=random_uniform,sampled_vocab,class_labels \
    --train_steps=30000 --batch_size=32 --out_dir=/runs/rte_ablation

Trains one prompt per pair with the paper's Adafactor settings (lr 0.3),
evaluates it at the end, and writes `<out_dir>/results.csv` and
`<out_dir>/ablation.png`. Re-running resumes unfinished runs. With
`--plot_only` it only redraws the PNG from the CSV.
"""

import argparse
import os
import sys
from typing import Sequence

from prompt_tuning import gin_utils
from prompt_tuning.analysis import ablation
from prompt_tuning.analysis import gin_model
from prompt_tuning.training import optimizers


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str]) -> int:
  files, bindings, search, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--plot_only", action="store_true")
  parser.add_argument("--task")
  parser.add_argument("--checkpoint", default=None)
  parser.add_argument("--lengths", type=_ints,
                      default=list(ablation.PAPER_LENGTHS))
  parser.add_argument("--initializers",
                      default=",".join(ablation.INITIALIZERS))
  parser.add_argument("--train_steps", type=int, default=30000)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--inputs_length", type=int, default=512)
  parser.add_argument("--targets_length", type=int, default=8)
  parser.add_argument("--learning_rate", type=float, default=0.3)
  parser.add_argument("--eval_num_examples", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(rest)

  csv_path = os.path.join(args.out_dir, "results.csv")
  if args.plot_only:
    rows = ablation.read_csv(csv_path)
  else:
    if not args.task:
      raise SystemExit("--task is required unless --plot_only.")
    model = gin_model.model_from_gin(files, bindings, search)
    rows = ablation.run_ablation(
        model=model, task_name=args.task, out_dir=args.out_dir,
        task_feature_lengths={"inputs": args.inputs_length,
                              "targets": args.targets_length},
        train_steps=args.train_steps, batch_size=args.batch_size,
        lengths=args.lengths,
        initializer_names=args.initializers.split(","),
        initial_checkpoint_path=args.checkpoint,
        optimizer=optimizers.adafactor(learning_rate=args.learning_rate),
        eval_num_examples=args.eval_num_examples, seed=args.seed,
        progress=False)
  png = ablation.plot_ablation(rows, os.path.join(args.out_dir,
                                                  "ablation.png"),
                               title=args.task)
  print(f"{csv_path}\n{png}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
