r"""Evaluates N prompts of one task alone and as a majority-vote ensemble.

  python scripts/ensemble_prompts.py \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --checkpoint=/ckpts/t5_1_1_lm100k_base/checkpoint_1100000 \
    --task=taskless_super_glue_rte_v102 \
    --prompts=/runs/rte_s0,/runs/rte_s1,/runs/rte_s2,/runs/rte_s3,/runs/rte_s4 \
    --batch_size=32 --output=/tmp/rte_ensemble.md

`--prompts` are `.npy` files or training runs' MODEL_DIRs (latest step).
All N prompts are decoded in one pass per batch through a prompt bank
(`batch_size * N` rows). Prints and writes the paper's Table 3 layout.
"""

import json
from typing import Sequence

from absl import flags

from prompt_tuning import cli
from prompt_tuning import gin_utils

cli.quiet_startup(cli.is_verbose())
# pylint: disable=g-import-not-at-top,wrong-import-position  (quiet first)
from prompt_tuning import partitioning
import prompt_tuning.tasks  # pylint: disable=unused-import  (registers)
from prompt_tuning.analysis import bank
from prompt_tuning.analysis import ensemble
from prompt_tuning.analysis import prompt_io


def _flags() -> flags.FlagValues:
  flag_values = cli.new_flags()
  cli.define_decoding_flags(flag_values)
  flags.DEFINE_string("task", None, "The SeqIO task to decode.",
                      flag_values=flag_values)
  flags.DEFINE_list("prompts", None, "Comma-separated .npy files or run "
                    "MODEL_DIRs.", flag_values=flag_values)
  flags.DEFINE_string("output", None, "Markdown file for the table.",
                      flag_values=flag_values)
  flags.DEFINE_string("json", None, "JSON file for per-example answers.",
                      flag_values=flag_values)
  for name in ("task", "prompts"):
    flags.mark_flag_as_required(name, flag_values=flag_values)
  return flag_values


def main(argv: Sequence[str]) -> int:
  args = gin_utils.parse_gin_command(argv, __doc__, _flags(),
                                     read_directly=("MODEL",))
  model = gin_utils.configured_model()
  prompts = [prompt_io.resolve_prompt(p) for p in args.prompts]
  for spec, prompt in zip(args.prompts, prompts):
    prompt_io.check_portable(prompt, model.module.config.emb_dim, source=spec)
  base = bank.load_base_params(model, args.checkpoint)
  result = ensemble.evaluate_ensemble(
      model, base, prompts, args.task,
      {"inputs": args.inputs_length, "targets": args.targets_length},
      args.batch_size, args.split, args.num_examples,
      partitioning.create_mesh(args.num_partitions))
  table = ensemble.table3_markdown([result])
  print(table)
  if args.output:
    with open(args.output, "w") as f:
      f.write(table)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"per_prompt": result.per_prompt,
                 "ensemble": result.ensemble, "answers": result.answers,
                 "voted": result.voted}, f, indent=1)
  return 0


if __name__ == "__main__":
  cli.run(main)
