"""Where prompts sit in checkpoints: ours and the original code's.

The original prompt-tuning code (google-research/prompt-tuning, on T5X and
Flaxformer) trains its prompt as the parameter `ORIGINAL_PROMPT` of the T5X
tree (`optimizer/target/encoder/prompt/prompt/prompt`, [length, embed]) and
also saves it, every checkpoint step, as one `.npy`-format file per saved
parameter under `<model_dir>/numpy_checkpoints/checkpoint_<step>/`, named
by the '.'-joined parameter path with no `.npy` suffix
(`encoder.prompt.prompt.prompt`; its readers accept one). Our prompts are
`SOFT_PROMPT` and `DEEP_PROMPT`.
"""

import re

ORIGINAL_PROMPT = "encoder/prompt/prompt/prompt"
SOFT_PROMPT = "prompt/prompt"  # Ours: `[length, embed]` or a bank.
DEEP_PROMPT = "deep_prompt/encoder/prefix"  # Ours: P-Tuning v2's prefixes.
NUMPY_CHECKPOINTS = "numpy_checkpoints"
NUMPY_SEPARATOR = "."
# The gin file and script that take a prompt out of such a run.
FROM_T5X_RUN_GIN = "prompts/from_t5x_run.gin"
FROM_T5X_RUN_MACRO = "PROMPT_CHECKPOINT"
IMPORT_SCRIPT = "scripts/import_prompt.py"

# A path component `prompt` or `deep_prompt`: ours, the original's.
_PROMPT_COMPONENT = re.compile(r"(^|/)(deep_)?prompt(/|$)")


def is_prompt(name: str) -> bool:
  """Whether the '/'-joined parameter `name` is (part of) a prompt."""
  return bool(_PROMPT_COMPONENT.search(name))


def prompt_fix(names: list[str]) -> str:
  """The advice for a checkpoint holding prompts a model does not expect.

  Args:
    names: the prompt parameters, with their shapes, e.g.
      ['encoder/prompt/prompt/prompt: [100, 768]'].
  """
  return (
      f"The checkpoint holds a prompt ({', '.join(names)}): it is a "
      "prompt-tuning run (the original prompt-tuning code names its prompt "
      f"{ORIGINAL_PROMPT}), not a pretrained model. Set "
      "INITIAL_CHECKPOINT_PATH to the frozen model the prompt was trained "
      "on and take the prompt from the run (DIR: this checkpoint): "
      f"--gin_file={FROM_T5X_RUN_GIN} --gin.{FROM_T5X_RUN_MACRO}=\"'DIR'\", "
      f"or write it to a .npy file with python {IMPORT_SCRIPT} --prompt=DIR "
      "(then prompts/from_file.gin).")


def missing_prompt_fix(names: list[str]) -> str:
  """The advice for a model expecting prompts a checkpoint lacks."""
  return (
      f"The model expects a prompt ({', '.join(names)}) that the checkpoint "
      "lacks, and it is not trained here: a pretrained model holds no "
      "prompt. Train it (a prompts/*.gin initialiser with a prompt run) or "
      "start it from a trained one: prompts/from_file.gin (.npy) or "
      f"{FROM_T5X_RUN_GIN} (a T5X prompt run, ours or the original code's).")
