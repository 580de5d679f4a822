"""Prompts as `.npy` files: export from a training run, import into another.

A trained prompt is one of a training run's trainable parameters
(`checkpoints.run_checkpoints` reads them). Exported arrays are float32:

  soft prompt   `prompt/prompt`                [length, embed]
  bank          `prompt/prompt`                [num_prompts, length, embed]
  deep prompt   `deep_prompt/encoder/prefix`   [layers, 2, length, heads*head_dim]

A soft prompt (or bank) goes back into a run through the from-file
initialiser (`configs/prompts/from_file.gin`, `PROMPT_FILE`). Prompts are
portable between models with the same embedding width; `check_portable`
turns a width mismatch into an explicit error. Files written by other code
(e.g. the paper authors' float64 `[5, 256]` or float32 `[100, 768]` prompts)
load the same way, and so do T5X prompt runs, the original prompt-tuning
code's included (`checkpoints.original_prompts`; `resolve_prompt`).
"""

import os
import pathlib
from typing import Any, Optional, Union

import numpy as np

from prompt_tuning.analysis import peft_prompt
from prompt_tuning.checkpoints import original_prompts
from prompt_tuning.checkpoints import prompt_names
from prompt_tuning.checkpoints import run_checkpoints

PathLike = Union[str, os.PathLike[str]]

SOFT_PROMPT = prompt_names.SOFT_PROMPT
DEEP_PROMPT = prompt_names.DEEP_PROMPT
# Searched in this order when no parameter name is given.
DEFAULT_NAMES = (SOFT_PROMPT, DEEP_PROMPT)


class PromptShapeError(ValueError):
  """A prompt does not fit the model it is meant for."""


def export_prompt(model_dir: PathLike, step: Optional[int] = None,
                  name: Optional[str] = None,
                  subdir: str = run_checkpoints.CHECKPOINTS
                  ) -> tuple[np.ndarray, str, int]:
  """Reads a prompt from a training run's checkpoint.

  Args:
    model_dir: MODEL_DIR of the run.
    step: checkpoint step; default the latest.
    name: the '/'-joined parameter; default the first of `DEFAULT_NAMES`
      that the checkpoint holds. A reparameterised deep prompt has no
      `prefix`: materialise it first (`prompts.deep.materialize`) or export
      `deep_prompt/encoder/embedding`.
    subdir: `checkpoints` or `best`.

  Returns:
    (float32 array, its parameter name, the step).

  Raises:
    FileNotFoundError: when the run has no (such) finished checkpoint.
    KeyError: when the checkpoint holds no such parameter.
  """
  flat, step = run_checkpoints.read_trainable(model_dir, step, subdir)
  names = [name] if name else list(DEFAULT_NAMES)
  for candidate in names:
    if candidate in flat:
      return flat[candidate].astype(np.float32), candidate, step
  raise KeyError(f"Checkpoint step {step} of {model_dir} holds no "
                 f"{' or '.join(names)}; its trainable parameters are "
                 f"{sorted(flat)}. Pass the parameter name.")


def save_prompt(path: PathLike, prompt: Any) -> pathlib.Path:
  """Writes `prompt` as a float32 `.npy` file (parents created)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, np.asarray(prompt, np.float32))
  return path


def load_prompt(path: PathLike) -> np.ndarray:
  """A `[length, embed]` or `[num_prompts, length, embed]` prompt, float32.

  Accepts any float dtype (the authors' fixtures include float64). A file
  that is no `.npy` array is refused (`original_prompts.read_npy`: naming
  it and how to write one; never unpickled).
  """
  return _checked(original_prompts.read_npy(path), os.fspath(path))


def _checked(value: np.ndarray, source: str) -> np.ndarray:
  """`value` as a float32 prompt; PromptShapeError naming `source` if not."""
  if value.ndim not in (2, 3):
    raise PromptShapeError(
        f"{source} holds an array of shape {list(value.shape)}; a "
        "prompt is [length, embed] or a bank [num_prompts, length, embed].")
  if not np.issubdtype(value.dtype, np.floating):
    raise PromptShapeError(f"{source} holds {value.dtype} values; "
                           "a prompt is floating point.")
  return value.astype(np.float32)


def resolve_prompt(source: PathLike, step: Optional[int] = None,
                   name: Optional[str] = None) -> np.ndarray:
  """A prompt from a `.npy` file, a training run's MODEL_DIR, a T5X
  prompt run (the original prompt-tuning code's or our T5X export: a T5X
  checkpoint or model directory, or its `numpy_checkpoints/`), or a PEFT
  prompt-tuning adapter directory (`adapter_config.json`).

  Args:
    source: the path.
    step: the checkpoint step; default the latest.
    name: the '/'-joined prompt parameter; default `SOFT_PROMPT` (a T5X
      run: `original_prompts.read_prompt`'s choice).
  """
  if os.path.isdir(source) and run_checkpoints.has_checkpoint(source):
    return export_prompt(source, step, name or SOFT_PROMPT)[0]
  if (pathlib.Path(source) / peft_prompt.ADAPTER_CONFIG_FILE).is_file():
    return _checked(peft_prompt.read_peft_prompt(source),
                    f"the PEFT adapter {os.fspath(source)}")
  if original_prompts.is_prompt_run(source):
    value, found, _ = original_prompts.read_prompt(source, step, name)
    return _checked(value, f"{found} of {os.fspath(source)}")
  if os.path.isdir(source):
    return export_prompt(source, step, name or SOFT_PROMPT)[0]
  return load_prompt(source)


def check_portable(prompt: np.ndarray, embed_dim: int,
                   length: Optional[int] = None,
                   source: str = "the prompt") -> None:
  """Raises `PromptShapeError` unless `prompt` fits a model's input.

  Args:
    prompt: `[length, embed]` or `[num_prompts, length, embed]`.
    embed_dim: the target model's embedding width (`T5Config.emb_dim`).
    length: the target run's PROMPT_LENGTH, if it is fixed already.
    source: how to name the prompt in the message (e.g. its path).
  """
  shape = list(np.shape(prompt))
  if len(shape) not in (2, 3):
    raise PromptShapeError(f"{source} has shape {shape}; expected [length, "
                           "embed] or [num_prompts, length, embed].")
  if shape[-1] != embed_dim:
    raise PromptShapeError(
        f"{source} has embedding width {shape[-1]} (shape {shape}) but the "
        f"model's is {embed_dim}: prompts carry over only between models "
        "with the same embedding width (e.g. T5 1.1 base is 768, large "
        "1024, small 512).")
  if length is not None and shape[-2] != length:
    raise PromptShapeError(
        f"{source} has {shape[-2]} positions (shape {shape}) but "
        f"PROMPT_LENGTH is {length}; set --gin.PROMPT_LENGTH={shape[-2]}.")


def from_file_flags(path: PathLike, prompt: np.ndarray) -> list[str]:
  """The gin flags that start a run from the prompt file at `path`."""
  flags = ["--gin_file=prompts/from_file.gin",
           f"--gin.PROMPT_FILE=\"'{os.fspath(path)}'\"",
           f"--gin.PROMPT_LENGTH={prompt.shape[-2]}"]
  if prompt.ndim == 3:
    flags.append(f"--gin.NUM_PROMPTS={prompt.shape[0]}")
  return flags
