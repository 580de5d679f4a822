"""Loads pre-trained T5 weights from whichever format a path holds."""

import enum
import os
import pathlib
from typing import Any, Mapping

from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import t5x

Params = param_tree.Params


class CheckpointFormat(enum.Enum):
  HUGGING_FACE = "hf"
  T5X = "t5x"


def detect_checkpoint_format(path: str | os.PathLike[str]) -> CheckpointFormat:
  """Tells which checkpoint format `path` holds.

  Args:
    path: a Hugging Face model directory (config.json with model.safetensors
      or model.safetensors.index.json), or a T5X checkpoint directory (with a
      msgpack `checkpoint` file), that file, or a T5X model directory (with
      `checkpoint_<step>` subdirectories).

  Returns:
    The format.

  Raises:
    FileNotFoundError: when `path` does not exist.
    ValueError: when the layout is none of the above.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"Checkpoint path {path} does not exist.")
  if path.is_file():
    if path.name == t5x.CHECKPOINT_FILE:
      return CheckpointFormat.T5X
    raise ValueError(
        f"{path} is a file; pass the checkpoint directory instead (a Hugging "
        "Face model directory, or a T5X checkpoint or model directory).")
  if (path / hf.CONFIG_FILE).is_file():
    return CheckpointFormat.HUGGING_FACE
  if (path / t5x.CHECKPOINT_FILE).is_file() or t5x.checkpoint_steps(path):
    return CheckpointFormat.T5X
  contents = sorted(child.name for child in path.iterdir())
  shown = ", ".join(contents[:10]) + (", ..." if len(contents) > 10 else "")
  raise ValueError(
      f"Unknown checkpoint layout in {path} (contains: {shown or 'nothing'}). "
      f"Expected a Hugging Face directory ({hf.CONFIG_FILE} + "
      f"{hf.SAFETENSORS_FILE} or {hf.SAFETENSORS_INDEX_FILE}), a T5X "
      f"checkpoint directory (msgpack '{t5x.CHECKPOINT_FILE}' file) or a T5X "
      "model directory (checkpoint_<step> subdirectories).")


def load_pretrained_params(
    path: str | os.PathLike[str],
    expected_shapes: Mapping[str, Any] | None = None,
) -> Params:
  """Loads T5 weights from a Hugging Face or T5X checkpoint.

  Optimizer state is not read; use `t5x.load_t5x_checkpoint` to resume.

  Args:
    path: see `detect_checkpoint_format`.
    expected_shapes: the model's parameter shapes (e.g. `jax.eval_shape` of
      its init, or `param_tree.t5_param_shapes(config)`); when given the
      loaded parameters must match them by name and shape.

  Returns:
    Nested dict of float32 numpy arrays, ready for
    `module.apply({'params': params}, ...)`.

  Raises:
    FileNotFoundError: for a missing path or weights file.
    ValueError: for an unknown layout or unsupported config.
    validation.ParamMismatchError: listing every missing, unexpected or
      mis-shaped parameter.
  """
  fmt = detect_checkpoint_format(path)
  if fmt == CheckpointFormat.HUGGING_FACE:
    _, params = hf.load_hf_t5(path, expected_shapes)
    return params
  checkpoint = t5x.load_t5x_checkpoint(
      path, expected_shapes=expected_shapes, restore_optimizer_state=False)
  return checkpoint.params
