"""A training run's checkpoints on disk: their layout, and reading them back.

`training.checkpointer.TrainCheckpointer` writes them with orbax, one folder
per saved step:

  MODEL_DIR/checkpoints/<step>/state/  {step, trainable, opt_state[, frozen]}
  MODEL_DIR/checkpoints/<step>/meta/   JSON: data position, trainable
                                       patterns, frozen-base record, metrics
  MODEL_DIR/best/<step>/...            the same, for the best evaluation

Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when
complete, so an all-digit folder holding `state/` is a finished checkpoint.

This module owns those names: the writer imports them, and whoever wants a
run's trained parameters (deep prompts started from a run, prompt export,
analyses) reads them here, to the host, without knowing the layout.
"""

import os
import pathlib
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from prompt_tuning.checkpoints import param_tree

PathLike = str | os.PathLike[str]

# Sub-directories of MODEL_DIR holding step folders.
CHECKPOINTS = "checkpoints"
BEST = "best"
# Items of a step folder.
STATE = "state"
META = "meta"
# Keys of the saved state tree.
STEP = "step"
TRAINABLE = "trainable"
OPT_STATE = "opt_state"
FROZEN = "frozen"


class RunCheckpointNotFoundError(FileNotFoundError):
  """A run directory holds no (such) completed checkpoint."""


def checkpoints_dir(model_dir: PathLike, subdir: str = CHECKPOINTS) -> str:
  """The absolute folder of a run's step folders, `MODEL_DIR/<subdir>`."""
  return os.path.join(os.path.abspath(os.fspath(model_dir)), subdir)


def completed_steps(model_dir: PathLike,
                    subdir: str = CHECKPOINTS) -> list[int]:
  """Steps of the finished checkpoints under `MODEL_DIR/<subdir>`,
  ascending; empty when there is none (or no such folder). Reads only."""
  root = pathlib.Path(checkpoints_dir(model_dir, subdir))
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir()
                if p.name.isdigit() and (p / STATE).is_dir())


def has_checkpoint(model_dir: PathLike, subdir: str = CHECKPOINTS) -> bool:
  """Whether `MODEL_DIR/<subdir>` holds a finished checkpoint; reads only."""
  return bool(completed_steps(model_dir, subdir))


def resolve_step(model_dir: PathLike, step: Optional[int] = None,
                 subdir: str = CHECKPOINTS) -> int:
  """`step`, or the latest, checked to be a finished checkpoint.

  Raises:
    RunCheckpointNotFoundError: when there is no finished checkpoint, or
      none for `step` (naming the steps there are).
  """
  steps = completed_steps(model_dir, subdir)
  where = checkpoints_dir(model_dir, subdir)
  if not steps:
    raise RunCheckpointNotFoundError(
        f"No completed training checkpoint in {where} (<step>/{STATE}); "
        "give the MODEL_DIR of a prompt_tuning.train run.")
  if step is None:
    return steps[-1]
  if int(step) not in steps:
    raise RunCheckpointNotFoundError(
        f"No checkpoint for step {step} in {where}; have {steps}.")
  return int(step)


def _state_dir(model_dir: PathLike, step: int, subdir: str) -> pathlib.Path:
  return pathlib.Path(checkpoints_dir(model_dir, subdir)) / str(step) / STATE


def _trainable_metadata(path: pathlib.Path) -> dict[str, Any]:
  """{name: orbax array metadata (`.shape`, `.dtype`)} of `trainable/`."""
  tree = ocp.StandardCheckpointer().metadata(path).item_metadata.tree
  return param_tree.flatten_params(tree.get(TRAINABLE, {}))


def _selected(names: Any, prefix: Optional[str]) -> list[str]:
  if prefix is None:
    return list(names)
  return [n for n in names if n.startswith(prefix + param_tree.SEPARATOR)]


def trainable_shapes(model_dir: PathLike, step: Optional[int] = None,
                     subdir: str = CHECKPOINTS, prefix: Optional[str] = None
                     ) -> tuple[dict[str, tuple[int, ...]], int]:
  """The shapes of a checkpoint's trainable parameters; reads metadata only.

  Args:
    model_dir: a training run's MODEL_DIR.
    step: checkpoint step; default the latest.
    subdir: `CHECKPOINTS` or `BEST`.
    prefix: keep only the names under it (e.g. 'deep_prompt').

  Returns:
    ({'/'-joined name: shape}, the step).

  Raises:
    RunCheckpointNotFoundError: see `resolve_step`.
  """
  step = resolve_step(model_dir, step, subdir)
  meta = _trainable_metadata(_state_dir(model_dir, step, subdir))
  return {n: tuple(meta[n].shape) for n in _selected(meta, prefix)}, step


def read_trainable(model_dir: PathLike, step: Optional[int] = None,
                   subdir: str = CHECKPOINTS, prefix: Optional[str] = None
                   ) -> tuple[dict[str, np.ndarray], int]:
  """A checkpoint's trainable parameters, read to the host.

  Only `trainable/` is read (not the optimizer state, nor a saved frozen
  base), as numpy arrays in their saved dtype.

  Args:
    model_dir: a training run's MODEL_DIR.
    step: checkpoint step; default the latest.
    subdir: `CHECKPOINTS` or `BEST`.
    prefix: read only the names under it (e.g. 'deep_prompt').

  Returns:
    ({'/'-joined name: np.ndarray}, the step read).

  Raises:
    RunCheckpointNotFoundError: see `resolve_step`.
  """
  step = resolve_step(model_dir, step, subdir)
  path = _state_dir(model_dir, step, subdir)
  meta = _trainable_metadata(path)
  names = _selected(meta, prefix)
  if not names:
    return {}, step
  item = param_tree.unflatten_params(
      {n: jax.ShapeDtypeStruct(meta[n].shape, meta[n].dtype) for n in names})
  restore_args = param_tree.unflatten_params(
      {n: ocp.RestoreArgs(restore_type=np.ndarray) for n in names})
  tree = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
      item={TRAINABLE: item}, restore_args={TRAINABLE: restore_args},
      partial_restore=True))
  flat = param_tree.flatten_params(tree[TRAINABLE])
  return {n: np.asarray(flat[n]) for n in names}, step
