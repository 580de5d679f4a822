r"""Exports a trained prompt from a training run to a `.npy` file.

  python scripts/export_prompt.py --model_dir=/tmp/rte_prompt \
    --output=/tmp/rte_prompt.npy [--step=30000] [--subdir=best] \
    [--param=deep_prompt/encoder/prefix]

Writes float32 `[length, embed]` (a bank: `[num_prompts, length, embed]`;
a deep prompt: `[layers, 2, length, heads*head_dim]`) and prints the gin
flags that start a new run from it (prompts/from_file.gin).
"""

from typing import Sequence

from absl import flags

from prompt_tuning import cli
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import run_checkpoints


def _flags() -> flags.FlagValues:
  flag_values = flags.FlagValues()
  flags.DEFINE_string("model_dir", None, "The training run's MODEL_DIR.",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None, "The .npy file to write.",
                      flag_values=flag_values)
  flags.DEFINE_integer("step", None, "Checkpoint step (default the latest).",
                       lower_bound=0, flag_values=flag_values)
  flags.DEFINE_enum("subdir", run_checkpoints.CHECKPOINTS,
                    [run_checkpoints.CHECKPOINTS, run_checkpoints.BEST],
                    "Which checkpoints of the run.", flag_values=flag_values)
  flags.DEFINE_string("param", None, "The parameter to export, e.g. "
                      "deep_prompt/encoder/prefix (default the soft prompt).",
                      flag_values=flag_values)
  cli.define_verbose_flag(flag_values)
  for name in ("model_dir", "output"):
    flags.mark_flag_as_required(name, flag_values=flag_values)
  return flag_values


def main(argv: Sequence[str]) -> int:
  args = cli.parse_flags(argv, _flags(), __doc__)
  prompt, name, step = prompt_io.export_prompt(args.model_dir, args.step,
                                               args.param, args.subdir)
  path = prompt_io.save_prompt(args.output, prompt)
  print(f"Wrote {name} {list(prompt.shape)} from step {step} to {path}")
  if name == prompt_io.SOFT_PROMPT:
    print("Start a run from it with: "
          + " ".join(prompt_io.from_file_flags(path, prompt)))
  return 0


if __name__ == "__main__":
  cli.run(main)
