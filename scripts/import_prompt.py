r"""Checks a prompt file against a model and writes a run-ready float32 copy.

  python scripts/import_prompt.py \
    --prompt=../shared/fixtures/prompts/t5_1_1_lm100k_base/rte.npy \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --output=/tmp/prompts/rte.npy

`--prompt` is a `.npy` file (any float dtype, e.g. the paper authors'
prompts) or a training run's MODEL_DIR. The embedding width must equal the
model's (`--embed_dim`, or the width of the gin-configured model); a
mismatch is an error. Prints the gin flags for prompts/from_file.gin.
"""

import argparse
import sys
from typing import Sequence

from prompt_tuning import gin_utils
from prompt_tuning.analysis import gin_model
from prompt_tuning.analysis import prompt_io


def main(argv: Sequence[str]) -> int:
  files, bindings, search, rest = gin_utils.split_gin_args(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--output", required=True)
  parser.add_argument("--embed_dim", type=int, default=None)
  parser.add_argument("--step", type=int, default=None)
  args = parser.parse_args(rest)
  if args.embed_dim is None:
    model = gin_model.model_from_gin(files, bindings, search)
    args.embed_dim = model.module.config.emb_dim
  prompt = prompt_io.resolve_prompt(args.prompt, args.step)
  prompt_io.check_portable(prompt, args.embed_dim, source=args.prompt)
  path = prompt_io.save_prompt(args.output, prompt)
  print(f"Wrote {list(prompt.shape)} float32 to {path}. Train or evaluate "
        "with: " + " ".join(prompt_io.from_file_flags(path, prompt)))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
