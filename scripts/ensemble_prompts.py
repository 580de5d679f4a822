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

import argparse
import json
import sys
from typing import Sequence

from prompt_tuning import gin_utils
from prompt_tuning import partitioning
from prompt_tuning.analysis import bank
from prompt_tuning.analysis import ensemble
from prompt_tuning.analysis import gin_model
from prompt_tuning.analysis import prompt_io


def main(argv: Sequence[str]) -> int:
  files, bindings, search, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  gin_model.add_decoding_flags(parser)
  parser.add_argument("--task", required=True)
  parser.add_argument("--prompts", required=True, help="comma-separated")
  parser.add_argument("--output", default=None, help="markdown file")
  parser.add_argument("--json", default=None, help="per-example answers")
  args = parser.parse_args(rest)

  model = gin_model.model_from_gin(files, bindings, search)
  prompts = [prompt_io.resolve_prompt(p) for p in args.prompts.split(",")]
  for spec, prompt in zip(args.prompts.split(","), prompts):
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
  sys.exit(main(sys.argv[1:]))
