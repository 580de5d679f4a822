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

import os
from typing import Sequence

from absl import flags

from prompt_tuning import cli
from prompt_tuning import gin_utils
from prompt_tuning import paper_defaults

cli.quiet_startup(cli.is_verbose())
# pylint: disable=g-import-not-at-top,wrong-import-position  (quiet first)
from prompt_tuning.analysis import ablation
from prompt_tuning.training import optimizers


def _flags() -> flags.FlagValues:
  flag_values = cli.new_flags()
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("out_dir", None, "Runs, results.csv and ablation.png.",
                      **define)
  flags.mark_flag_as_required("out_dir", **define)
  flags.DEFINE_bool("plot_only", False, "Only redraw the PNG from the CSV.",
                    **define)
  flags.DEFINE_string("task", None, "The SeqIO task (unless --plot_only).",
                      **define)
  flags.DEFINE_string("checkpoint", None, "The frozen pretrained model.",
                      **define)
  flags.DEFINE_list("lengths", [str(n) for n in ablation.PAPER_LENGTHS],
                    "Prompt lengths.", **define)
  flags.DEFINE_list("initializers", list(ablation.INITIALIZERS),
                    "Prompt initialisers.", **define)
  flags.DEFINE_integer("train_steps", paper_defaults.TRAIN_STEPS,
                       "Steps per run.", lower_bound=1, **define)
  cli.define_batch_flags(flag_values)
  flags.DEFINE_float("learning_rate", paper_defaults.LEARNING_RATE,
                     "Adafactor's learning rate.", **define)
  flags.DEFINE_integer("eval_num_examples", None, "Evaluate on the first N "
                       "examples only.", lower_bound=1, **define)
  flags.DEFINE_integer("seed", 0, "Seed of every run.", **define)
  return flag_values


def main(argv: Sequence[str]) -> int:
  args = gin_utils.parse_gin_command(argv, __doc__, _flags(),
                                     read_directly=("MODEL",),
                                     gin_required=False)
  csv_path = os.path.join(args.out_dir, "results.csv")
  if args.plot_only:
    rows = ablation.read_csv(csv_path)
  else:
    if not args.task:
      raise cli.UsageError("--task is required unless --plot_only.")
    if not args.gin_file:
      raise cli.UsageError("Give the model's gin files, e.g. "
                           "--gin_file=models/t5_1_1_base.gin "
                           "--gin_file=prompts/prompt.gin.")
    try:
      lengths = [int(n) for n in args.lengths]
    except ValueError as e:
      raise cli.UsageError(f"--lengths must be integers: {args.lengths}."
                           ) from e
    model = gin_utils.configured_model()
    rows = ablation.run_ablation(
        model=model, task_name=args.task, out_dir=args.out_dir,
        task_feature_lengths={"inputs": args.inputs_length,
                              "targets": args.targets_length},
        train_steps=args.train_steps, batch_size=args.batch_size,
        lengths=lengths,
        initializer_names=args.initializers,
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
  cli.run(main)
