r"""Checks a prompt file against a model and writes a run-ready float32 copy.

  python scripts/import_prompt.py \
    --prompt=../shared/fixtures/prompts/t5_1_1_lm100k_base/rte.npy \
    --gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin \
    --output=/tmp/prompts/rte.npy

`--prompt` is a `.npy` file (any float dtype, e.g. the paper authors'
prompts), a training run's MODEL_DIR, or a T5X prompt run: the original
prompt-tuning code's (a T5X `checkpoint_<step>` folder or model directory
holding `encoder/prompt/prompt/prompt`, or its `numpy_checkpoints/` folder or
files) or our T5X export's (`prompt/prompt`), or a PEFT prompt-tuning
adapter directory (`adapter_config.json`, e.g. one `prompt_tuning.export
--to=peft` wrote); `--prompt_name` picks another parameter. The embedding width must equal the
model's (`--embed_dim`, or the width of the gin-configured model); a
mismatch is an error. Prints the gin flags for prompts/from_file.gin.
"""

from typing import Sequence

from absl import flags

from prompt_tuning import cli
from prompt_tuning import gin_utils
from prompt_tuning.analysis import prompt_io


def _flags() -> flags.FlagValues:
  flag_values = cli.new_flags()
  flags.DEFINE_string("prompt", None, "A .npy prompt file, a training "
                      "run's MODEL_DIR, a T5X prompt run (checkpoint or "
                      "model directory, numpy_checkpoints/) or a PEFT adapter directory.",
                      flag_values=flag_values)
  flags.DEFINE_string("prompt_name", None, "The '/'-joined prompt parameter "
                      "(default: prompt/prompt; in a T5X run "
                      "encoder/prompt/prompt/prompt, else prompt/prompt).",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None, "The float32 .npy file to write.",
                      flag_values=flag_values)
  flags.DEFINE_integer("embed_dim", None, "The model's embedding width "
                       "(default: the gin-configured model's).",
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer("step", None, "The run's checkpoint step (default "
                       "the latest).", lower_bound=0, flag_values=flag_values)
  for name in ("prompt", "output"):
    flags.mark_flag_as_required(name, flag_values=flag_values)
  return flag_values


def main(argv: Sequence[str]) -> int:
  args = gin_utils.parse_gin_command(argv, __doc__, _flags(),
                                     read_directly=("MODEL",),
                                     gin_required=False)
  embed_dim = args.embed_dim
  if embed_dim is None:
    if not args.gin_file:
      raise cli.UsageError("Give --embed_dim=N or the model's gin files "
                           "(--gin_file=models/t5_1_1_base.gin "
                           "--gin_file=prompts/prompt.gin).")
    embed_dim = gin_utils.configured_model().module.config.emb_dim
  prompt = prompt_io.resolve_prompt(args.prompt, args.step, args.prompt_name)
  prompt_io.check_portable(prompt, embed_dim, source=args.prompt)
  path = prompt_io.save_prompt(args.output, prompt)
  print(f"Wrote {list(prompt.shape)} float32 to {path}. Train or evaluate "
        "with: " + " ".join(prompt_io.from_file_flags(path, prompt)))
  return 0


if __name__ == "__main__":
  cli.run(main)
