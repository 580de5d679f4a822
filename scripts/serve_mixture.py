r"""Serves several tasks from one frozen model, each example with its task's
prompt, in shared batches (multi-task serving with a prompt bank).

  python scripts/serve_mixture.py \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --checkpoint=/ckpts/t5_1_1_lm100k_base/checkpoint_1100000 \
    --task_prompt=taskless_super_glue_rte_v102=/runs/rte \
    --task_prompt=taskless_super_glue_cb_v102=/runs/cb \
    --split=validation --batch_size=32 --output_dir=/tmp/served

Each `--task_prompt` is TASK=PROMPT with PROMPT a `.npy` file or a training
run's MODEL_DIR; all prompts must share one shape. Writes
`<output_dir>/<task>-<split>.jsonl` with the fields of prompt_tuning.infer.
"""

import argparse
import sys
from typing import Sequence

from prompt_tuning import gin_utils
from prompt_tuning import partitioning
from prompt_tuning.analysis import bank
from prompt_tuning.analysis import gin_model
from prompt_tuning.analysis import prompt_io
from prompt_tuning.analysis import serving


def main(argv: Sequence[str]) -> int:
  files, bindings, search, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  gin_model.add_decoding_flags(parser)
  parser.add_argument("--task_prompt", action="append", required=True)
  parser.add_argument("--output_dir", required=True)
  args = parser.parse_args(rest)

  model = gin_model.model_from_gin(files, bindings, search)
  prompts = {}
  for spec in args.task_prompt:
    task, sep, source = spec.partition("=")
    if not sep:
      raise SystemExit(f"--task_prompt {spec!r} must be TASK=PROMPT.")
    prompts[task] = prompt_io.resolve_prompt(source)
    prompt_io.check_portable(prompts[task], model.module.config.emb_dim,
                             source=source)
  base = bank.load_base_params(model, args.checkpoint)
  outputs = serving.serve_mixed(
      model, base, prompts,
      {"inputs": args.inputs_length, "targets": args.targets_length},
      args.batch_size, args.split, args.num_examples,
      partitioning.create_mesh(args.num_partitions))
  for task, path in serving.write_records(outputs, args.output_dir,
                                          args.split).items():
    print(f"{task}: {len(outputs[task])} predictions -> {path}")
  for task, values in serving.task_metrics(outputs).items():
    print(f"{task}: " + ", ".join(f"{k}={v:.2f}" for k, v in values.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
