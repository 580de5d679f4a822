r"""Exports a trained prompt from a training run to a `.npy` file.

  python scripts/export_prompt.py --model_dir=/tmp/rte_prompt \
    --output=/tmp/rte_prompt.npy [--step=30000] [--subdir=best] \
    [--param=deep_prompt/encoder/prefix]

Writes float32 `[length, embed]` (a bank: `[num_prompts, length, embed]`;
a deep prompt: `[layers, 2, length, heads*head_dim]`) and prints the gin
flags that start a new run from it (prompts/from_file.gin).
"""

import argparse
import sys
from typing import Sequence

from prompt_tuning.analysis import prompt_io


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--subdir", default="checkpoints")
  parser.add_argument("--param", default=None)
  args = parser.parse_args(argv)
  prompt, name, step = prompt_io.export_prompt(args.model_dir, args.step,
                                               args.param, args.subdir)
  path = prompt_io.save_prompt(args.output, prompt)
  print(f"Wrote {name} {list(prompt.shape)} from step {step} to {path}")
  if name == prompt_io.SOFT_PROMPT:
    print("Start a run from it with: "
          + " ".join(prompt_io.from_file_flags(path, prompt)))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
