"""Which pre-trained checkpoint format a path holds (read by `sharded`)."""

import enum
import os
import pathlib

from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import t5x


class CheckpointFormat(enum.Enum):
  HUGGING_FACE = "hf"
  T5X = "t5x"


def detect_checkpoint_format(path: str | os.PathLike[str]) -> CheckpointFormat:
  """Tells which checkpoint format `path` holds.

  Args:
    path: a Hugging Face model directory (config.json with a weights file,
      see `hf_formats`), or a T5X checkpoint directory (with a
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
      f"{hf.SAFETENSORS_FILE}, pytorch_model.bin, flax_model.msgpack or "
      "tf_model.h5), a T5X checkpoint directory (msgpack "
      f"'{t5x.CHECKPOINT_FILE}' file) or a T5X model directory "
      "(checkpoint_<step> subdirectories).")
