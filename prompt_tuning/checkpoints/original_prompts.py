"""Reading a prompt out of a T5X prompt run: the original code's or ours.

Sources (`read_prompt`), see `prompt_names` for the layouts:

  a T5X checkpoint   `checkpoint_<step>/`, its msgpack `checkpoint` file, or
                     a model directory holding them (latest step): the
                     prompt is read alone (tensorstore or inline), whatever
                     else the tree holds.
  numpy_checkpoints  `<model_dir>` or `<model_dir>/numpy_checkpoints` (the
                     latest step) or one `numpy_checkpoints/checkpoint_<step>/`
                     folder: the prompt's file, named by its '.'-joined path,
                     with or without `.npy`.
  one file           an `.npy` prompt, or one of those files on its own.

A model directory holding both reads `numpy_checkpoints/` (every step is
there; T5X keeps few checkpoints). The prompt is, unless named,
`prompt_names.ORIGINAL_PROMPT`, else our `prompt_names.SOFT_PROMPT`, else
the only prompt-like parameter.
"""

import os
import pathlib
import re
from typing import Optional, Union

import numpy as np

from prompt_tuning.checkpoints import prompt_names
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import t5x

PathLike = Union[str, os.PathLike[str]]

_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")
_NPY = ".npy"


class PromptSourceError(ValueError):
  """A path holds no prompt (or several, none of them named)."""


def numpy_checkpoint_steps(path: PathLike) -> dict[int, pathlib.Path]:
  """{step: folder} of a `numpy_checkpoints/` folder or its model dir.

  Folders still being written (`checkpoint_<step>.tmp-<time>`) are left out.
  """
  path = pathlib.Path(path)
  if path.name != prompt_names.NUMPY_CHECKPOINTS:
    path = path / prompt_names.NUMPY_CHECKPOINTS
  if not path.is_dir():
    return {}
  steps = {int(m.group(1)): child for child in path.iterdir()
           if (m := _STEP_DIR.match(child.name)) and child.is_dir()}
  return dict(sorted(steps.items()))


def _is_numpy_step_dir(path: pathlib.Path) -> bool:
  return (path.is_dir() and _STEP_DIR.match(path.name) is not None and
          path.parent.name == prompt_names.NUMPY_CHECKPOINTS)


def is_prompt_run(path: PathLike) -> bool:
  """Whether `path` is a T5X checkpoint / model dir or numpy_checkpoints."""
  path = pathlib.Path(path)
  if _is_numpy_step_dir(path) or numpy_checkpoint_steps(path):
    return True
  if path.is_file():
    return path.name == t5x.CHECKPOINT_FILE
  return path.is_dir() and ((path / t5x.CHECKPOINT_FILE).is_file() or
                            bool(t5x.checkpoint_steps(path)))


def _pick(names: list[str], name: Optional[str], where: str) -> str:
  """The prompt among `names`: `name`, else the defaults (module doc)."""
  if name is not None:
    if name in names:
      return name
    raise PromptSourceError(f"{where} holds no {name}; it holds "
                            f"{sorted(names)[:12]}.")
  for candidate in (prompt_names.ORIGINAL_PROMPT, prompt_names.SOFT_PROMPT):
    if candidate in names:
      return candidate
  prompts = [n for n in names if prompt_names.is_prompt(n)]
  if len(prompts) == 1:
    return prompts[0]
  raise PromptSourceError(
      f"{where} holds {'no prompt' if not prompts else 'several prompts'} "
      f"(expected {prompt_names.ORIGINAL_PROMPT} or "
      f"{prompt_names.SOFT_PROMPT}); its parameters include "
      f"{sorted(prompts or names)[:12]}. Name one (--prompt_name / "
      "PROMPT_CHECKPOINT_NAME).")


NPY_HOW_TO = ("A .npy file is what np.save writes: "
              "np.save('prompt.npy', np.asarray(prompt, np.float32)).")
_ZIP_MAGIC = b"PK"


def _not_npy(path: PathLike, why: str) -> PromptSourceError:
  return PromptSourceError(f"{os.fspath(path)} is not a readable .npy array: "
                           f"{why}. {NPY_HOW_TO}")


def read_npy(path: PathLike, mmap_mode: Optional[str] = None) -> np.ndarray:
  """The array of a `.npy` file; never unpickles.

  `mmap_mode='r'` reads only the header until the data is used.

  Raises:
    FileNotFoundError: no such file.
    PromptSourceError: the file is no `.npy` array (text, a pickle, an
      `.npz` archive, an array of Python objects, a cut-off file), naming
      it and how to write one, without numpy's advice to unpickle it.
  """
  try:
    with open(path, "rb") as f:
      head = f.read(len(np.lib.format.MAGIC_PREFIX))
  except IsADirectoryError as e:
    raise _not_npy(path, "it is a directory") from e
  if head.startswith(_ZIP_MAGIC):
    raise _not_npy(path, "it is a zip archive (an .npz of several arrays, "
                   "np.savez's format), not one array")
  if head != np.lib.format.MAGIC_PREFIX:
    raise _not_npy(path, "it does not start with the .npy header (it may be "
                   "text, a pickle or another format)")
  try:
    value = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
  except ValueError as e:
    if "pickle" in str(e).lower():
      raise _not_npy(path, "it holds Python objects, not numbers") from e
    raise _not_npy(path, f"its header or data is damaged ({e})") from e
  except (OSError, EOFError) as e:
    raise _not_npy(path, f"it could not be read ({e})") from e
  if not isinstance(value, np.ndarray):
    raise _not_npy(path, "it holds no single array")
  return value


def _load(path: pathlib.Path) -> np.ndarray:
  return read_npy(path)


def _read_numpy_step(folder: pathlib.Path, name: Optional[str]
                     ) -> tuple[np.ndarray, str]:
  files = {}
  for child in folder.iterdir():
    stem = (child.name[:-len(_NPY)] if child.name.endswith(_NPY)
            else child.name)
    if child.is_file():
      files[stem.replace(prompt_names.NUMPY_SEPARATOR, "/")] = child
  chosen = _pick(list(files), name, str(folder))
  return _load(files[chosen]), chosen


def _read_t5x(path: PathLike, step: Optional[int], name: Optional[str]
              ) -> tuple[np.ndarray, str, Optional[int]]:
  if step is not None and pathlib.Path(path).is_dir() and not (
      pathlib.Path(path) / t5x.CHECKPOINT_FILE).is_file():
    steps = t5x.checkpoint_steps(path)
    if step not in steps:
      raise FileNotFoundError(f"{path} has no T5X checkpoint_{step}; it "
                              f"has steps {sorted(steps)}.")
    path = steps[step]
  with sharded.open_checkpoint(path) as record:
    chosen = _pick(list(record.names), name, record.description)
    return record.read(chosen, None, None), chosen, record.step


def read_prompt(path: PathLike, step: Optional[int] = None,
                name: Optional[str] = None
                ) -> tuple[np.ndarray, str, Optional[int]]:
  """Reads a prompt from a T5X prompt run (see the module docstring).

  Args:
    path: the run's model directory, a checkpoint folder or file, a
      numpy_checkpoints folder, or one prompt file.
    step: the checkpoint step; default the latest.
    name: the '/'-joined parameter; default as the module docstring says.

  Returns:
    (the array as stored, its parameter name, its step or None).

  Raises:
    FileNotFoundError: no such path or step.
    PromptSourceError: no (single) prompt there.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"Prompt source {path} does not exist.")
  if path.is_file() and path.name != t5x.CHECKPOINT_FILE:
    return _load(path), name or path.name, None
  if _is_numpy_step_dir(path):
    value, chosen = _read_numpy_step(path, name)
    return value, chosen, int(_STEP_DIR.match(path.name).group(1))
  steps = numpy_checkpoint_steps(path)
  if steps:
    if step is None:
      step = max(steps)
    if step in steps:
      value, chosen = _read_numpy_step(steps[step], name)
      return value, chosen, step
  return _read_t5x(path, step, name)
