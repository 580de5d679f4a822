r"""Export a checkpoint as a Hugging Face T5, or a prompt as a PEFT adapter.

  # A T5X or Hugging Face checkpoint, or a training run's MODEL_DIR (its
  # frozen base plus its trained T5 parameters), as a Hugging Face T5 dir:
  python -m prompt_tuning.export --to=hf --checkpoint=DIR --output=OUT \
      [--vocab=spiece.model] [--subdir=best] [--step=N] \
      [--gin_file=models/t5_1_1_base.gin]

  # A trained prompt (a run's MODEL_DIR or a .npy) as a PEFT prompt-tuning
  # adapter for the Hugging Face T5 in --base_model:
  python -m prompt_tuning.export --to=peft --prompt=RUN_DIR_or_NPY \
      --base_model=HF_DIR --output=OUT [--subdir=best] [--step=N]

--to=hf writes config.json, model.safetensors, spiece.model (from --vocab,
default the configured vocabulary: PROMPT_TUNING_VOCAB) and the tokenizer
settings, so that transformers' `T5ForConditionalGeneration.from_pretrained`
and `T5Tokenizer.from_pretrained` load OUT, and our reader reads it back
unchanged. A T5X checkpoint records no configuration: sizes come from the
shapes; the relative-attention maximum distance and the MLP activation come
from a model gin file when given, else 128 and gated GELU (T5 1.1) / ReLU
(T5 1.0) by the MLP's shape. A run's trained parameters that are not T5's
(a soft prompt) are named and left out: export them with --to=peft.

--to=peft writes adapter_config.json and adapter_model.safetensors
(`analysis.peft_prompt`); `peft_prompt.read_peft_prompt(dir)` reads one back
into a `[length, embed]` array (e.g. for prompts/from_file.gin).
"""

import json
import os
import re
from typing import Optional, Sequence

from absl import flags

from prompt_tuning import cli

cli.quiet_startup(cli.is_verbose())
# pylint: disable=g-import-not-at-top,wrong-import-position  (quiet first)
import numpy as np

from prompt_tuning import gin_utils
from prompt_tuning.analysis import peft_prompt
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import hf_export
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import pretrained
from prompt_tuning.checkpoints import run_checkpoints
from prompt_tuning.checkpoints import sharded
from prompt_tuning.data import vocab as vocab_lib
from prompt_tuning.models import config as config_lib

_META_FILE = "metadata"  # What orbax's JsonSave names the meta item's file.
_RUN_CONFIG = "config.gin"


def _flags() -> flags.FlagValues:
  flag_values = cli.new_flags()
  define = dict(flag_values=flag_values)
  flags.DEFINE_enum("to", None, ["hf", "peft"], "What to write: a Hugging "
                    "Face T5 directory or a PEFT prompt-tuning adapter.",
                    **define)
  flags.DEFINE_string("output", None, "The directory to write.", **define)
  flags.DEFINE_string("checkpoint", None, "--to=hf: a T5X checkpoint (or "
                      "model) directory, a Hugging Face T5 directory, or a "
                      "training run's MODEL_DIR.", **define)
  flags.DEFINE_string("prompt", None, "--to=peft: a training run's MODEL_DIR "
                      "or a [length, embed] .npy prompt.", **define)
  flags.DEFINE_string("base_model", None, "--to=peft: the Hugging Face T5 "
                      "directory the prompt is for (e.g. written by --to=hf)."
                      , **define)
  flags.DEFINE_enum("subdir", run_checkpoints.CHECKPOINTS,
                    [run_checkpoints.CHECKPOINTS, run_checkpoints.BEST],
                    "A run's checkpoints to read.", **define)
  flags.DEFINE_integer("step", None, "A run's checkpoint step (default the "
                       "latest).", lower_bound=0, **define)
  flags.DEFINE_string("vocab", None, "--to=hf: the SentencePiece model (or a "
                      "directory holding spiece.model) to ship; default the "
                      "configured vocabulary; 'none' writes no tokenizer.",
                      **define)
  return flag_values


def _gin_config() -> Optional[config_lib.T5Config]:
  """The T5Config of the model gin file given, if any."""
  if gin_utils.query_macro("MODEL") is None:
    return None
  return gin_utils.configured_model().module.config


def run_base_path(model_dir: str, step: int, subdir: str) -> str:
  """The frozen base a training run started from: the path its checkpoint
  recorded (`frozen_base`), else INITIAL_CHECKPOINT_PATH in its config.gin.

  Raises:
    FileNotFoundError: when neither records one.
  """
  meta = os.path.join(run_checkpoints.checkpoints_dir(model_dir, subdir),
                      str(step), run_checkpoints.META, _META_FILE)
  if os.path.isfile(meta):
    with open(meta) as f:
      path = (json.load(f).get("frozen_base") or {}).get("path")
    if path:
      return path
  gin_file = os.path.join(model_dir, _RUN_CONFIG)
  if os.path.isfile(gin_file):
    with open(gin_file) as f:
      found = re.search(r"^INITIAL_CHECKPOINT_PATH\s*=\s*['\"]([^'\"]+)['\"]",
                        f.read(), re.MULTILINE)
    if found:
      return found.group(1)
  raise FileNotFoundError(
      f"{model_dir} step {step} records no frozen base (no frozen_base path "
      f"in its checkpoint, no INITIAL_CHECKPOINT_PATH in {_RUN_CONFIG}); "
      "export the base checkpoint itself.")


def load_for_hf(path: str, *, subdir: str = run_checkpoints.CHECKPOINTS,
                step: Optional[int] = None,
                config: Optional[config_lib.T5Config] = None
                ) -> tuple[dict[str, np.ndarray], config_lib.T5Config,
                           list[str]]:
  """A checkpoint's T5 parameters and configuration, to the host.

  Args:
    path: a T5X or Hugging Face checkpoint, or a run's MODEL_DIR (its base,
      with the run's trained T5 parameters in place of the base's).
    subdir, step: which checkpoint of a run.
    config: the model's configuration (e.g. from a gin file); default the
      Hugging Face checkpoint's own, or inferred from T5X shapes.

  Returns:
    ({'/'-joined name: float32 array}, config, the run's trained parameter
    names that are not T5's and were left out).
  """
  trained: dict[str, np.ndarray] = {}
  if run_checkpoints.has_checkpoint(path, subdir):
    trained, step = run_checkpoints.read_trainable(path, step, subdir)
    path = run_base_path(path, step, subdir)
  with sharded.open_checkpoint(path) as record:
    flat = param_tree.flatten_params(record.read_all())
    own = record.config
  if config is None:
    config = own or hf_export.infer_t5_config(flat)
  left_out = sorted(n for n in trained if n not in flat)
  for name in trained:
    if name in flat:
      flat[name] = np.asarray(trained[name], np.float32)
  return flat, config, left_out


def _vocab_file(vocab: Optional[str]) -> Optional[str]:
  if vocab == "none":
    return None
  path = vocab_lib.resolve_model_file(vocab_lib.vocabulary_path(vocab))
  if not os.path.isfile(path):
    raise cli.UsageError(
        f"The vocabulary {path} is not a local file; pass --vocab=spiece.model "
        f"(or set {vocab_lib.VOCAB_ENV}), or --vocab=none for no tokenizer.")
  return path


def _export_hf(args: flags.FlagValues) -> None:
  if not args.checkpoint:
    raise cli.UsageError("--to=hf needs --checkpoint=DIR.")
  if not run_checkpoints.has_checkpoint(args.checkpoint, args.subdir):
    pretrained.detect_checkpoint_format(args.checkpoint)  # Fails fast.
  vocab_file = _vocab_file(args.vocab)
  flat, config, left_out = load_for_hf(args.checkpoint, subdir=args.subdir,
                                       step=args.step, config=_gin_config())
  out = hf_export.write_hf_checkpoint(args.output, flat, config, vocab_file)
  print(f"Wrote the Hugging Face T5 ({len(flat)} parameters, "
        f"feed_forward_proj {hf_export.feed_forward_proj(config)[0]}, "
        f"tied logits {config.logits_via_embedding}) to {out}.")
  if left_out:
    print(f"Left out the run's trained {', '.join(left_out)} (not T5 "
          "parameters; a soft prompt goes out with --to=peft).")


def _export_peft(args: flags.FlagValues) -> None:
  if not args.prompt or not args.base_model:
    raise cli.UsageError("--to=peft needs --prompt=RUN_DIR_or_NPY and "
                         "--base_model=HF_DIR.")
  if os.path.isdir(args.base_model):
    config = hf.hf_config_to_t5_config(hf.read_hf_config(args.base_model))
  else:
    config = _gin_config()
    if config is None:
      raise cli.UsageError(
          f"--base_model {args.base_model} is not a local Hugging Face "
          "directory; give a model gin file (--gin_file=models/...) for its "
          "sizes.")
  if not os.path.isdir(args.prompt) and not args.prompt.endswith(".npy"):
    raise cli.UsageError(f"--prompt {args.prompt} is neither a training "
                         "run's MODEL_DIR nor a .npy prompt.")
  if os.path.isdir(args.prompt):
    prompt, _, _ = prompt_io.export_prompt(args.prompt, args.step,
                                           prompt_io.SOFT_PROMPT, args.subdir)
  else:
    prompt = prompt_io.load_prompt(args.prompt)
  prompt_io.check_portable(prompt, config.emb_dim, source=args.prompt)
  out = peft_prompt.write_peft_prompt(args.output, prompt, config,
                                      args.base_model)
  print(f"Wrote the PEFT prompt-tuning adapter ({prompt.shape[0]} virtual "
        f"tokens x {prompt.shape[1]}) to {out}.")


def main(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (without the program name)."""
  args = gin_utils.parse_gin_command(argv, __doc__, _flags(),
                                     read_directly=("MODEL",),
                                     gin_required=False)
  if not args.to or not args.output:
    raise cli.UsageError("Give --to=hf or --to=peft, and --output=DIR.")
  if args.validate_only:
    print("Configuration valid; nothing written.")
    return 0
  (_export_hf if args.to == "hf" else _export_peft)(args)
  return 0


if __name__ == "__main__":
  cli.run(main)
