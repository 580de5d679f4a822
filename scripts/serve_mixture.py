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

from typing import Sequence

from absl import flags

from prompt_tuning import cli
from prompt_tuning import gin_utils

cli.quiet_startup(cli.is_verbose())
# pylint: disable=g-import-not-at-top,wrong-import-position  (quiet first)
from prompt_tuning import partitioning
import prompt_tuning.tasks  # pylint: disable=unused-import  (registers)
from prompt_tuning.analysis import bank
from prompt_tuning.analysis import prompt_io
from prompt_tuning.analysis import serving


def _flags() -> flags.FlagValues:
  flag_values = cli.new_flags()
  cli.define_decoding_flags(flag_values)
  flags.DEFINE_multi_string("task_prompt", [], "TASK=PROMPT, PROMPT a .npy "
                            "file or a run's MODEL_DIR (repeatable).",
                            flag_values=flag_values)
  flags.DEFINE_string("output_dir", None, "Where the .jsonl records go.",
                      flag_values=flag_values)
  flags.mark_flag_as_required("output_dir", flag_values=flag_values)
  return flag_values


def main(argv: Sequence[str]) -> int:
  args = gin_utils.parse_gin_command(argv, __doc__, _flags(),
                                     read_directly=("MODEL",))
  if not args.task_prompt:
    raise cli.UsageError("Give at least one --task_prompt=TASK=PROMPT.")
  model = gin_utils.configured_model()
  prompts = {}
  for spec in args.task_prompt:
    task, sep, source = spec.partition("=")
    if not sep:
      raise cli.UsageError(f"--task_prompt {spec!r} must be TASK=PROMPT.")
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
  cli.run(main)
