"""A training run's checkpoints on disk: their layout, and reading them back.

`training.checkpointer.TrainCheckpointer` writes them with orbax, one folder
per saved step:

  MODEL_DIR/checkpoints/<step>/state/  {step, trainable, opt_state[, frozen]}
  MODEL_DIR/checkpoints/<step>/meta/   JSON: data position, trainable
                                       patterns, frozen-base record, metrics
  MODEL_DIR/best/<step>/...            the same, for the best evaluation

Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when
complete, so an all-digit folder holding `state/` is a finished checkpoint.

`meta` also records the checksum (`integrity.array_checksum`) of every array
of `state/` under `CHECKSUMS`, `{leaf name: checksum}` (names from
`flat_leaves`); runs written before that have none and are read unverified.
A step found damaged when a run resumes is moved, never deleted, to
`MODEL_DIR/<subdir>.bad/<step>-<UTC time>/` (`set_aside`): a folder that
neither orbax nor `completed_steps` reads. A step replaced by a save with
other content is first written under `MODEL_DIR/<subdir>.staging/`.

This module owns those names: the writer imports them, and whoever wants a
run's trained parameters (deep prompts started from a run, prompt export,
analyses) reads them here, to the host, without knowing the layout.
"""

import datetime
import json
import os
import pathlib
import shutil
from typing import Any, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from prompt_tuning.checkpoints import integrity
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
# Key of `meta`: {leaf name: integrity.array_checksum} of the state tree.
CHECKSUMS = "checksums"
# Siblings of `MODEL_DIR/<subdir>`: damaged steps moved aside, and where a
# step that replaces an existing one is written before the swap.
BAD_SUFFIX = ".bad"
STAGING_SUFFIX = ".staging"


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


def bad_steps_dir(model_dir: PathLike, subdir: str = CHECKPOINTS) -> str:
  """Where damaged steps of `MODEL_DIR/<subdir>` are moved aside."""
  return checkpoints_dir(model_dir, subdir + BAD_SUFFIX)


def staging_dir(model_dir: PathLike, subdir: str = CHECKPOINTS) -> str:
  """Where a step replacing one of `MODEL_DIR/<subdir>` is written first."""
  return checkpoints_dir(model_dir, subdir + STAGING_SUFFIX)


def set_aside(model_dir: PathLike, step: int,
              subdir: str = CHECKPOINTS) -> str:
  """Moves the folder of `step` (damaged) to
  `bad_steps_dir/<step>-<UTC time>[-n]`, a rename (nothing is deleted);
  returns where it went."""
  target = pathlib.Path(bad_steps_dir(model_dir, subdir))
  target.mkdir(parents=True, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
      "%Y%m%dT%H%M%SZ")
  name, n = f"{step}-{stamp}", 1
  while (target / name).exists():
    name, n = f"{step}-{stamp}-{n}", n + 1
  os.rename(os.path.join(checkpoints_dir(model_dir, subdir), str(step)),
            target / name)
  return str(target / name)


_REPLACED = ".replaced"


def swap_in(model_dir: PathLike, step: int,
            subdir: str = CHECKPOINTS) -> None:
  """Replaces the folder of `step` by the complete one written under
  `staging_dir`, then removes the staging folder. The old copy is renamed
  into the staging folder first, so a complete copy of the step exists at
  every moment (`finish_swap` completes a swap a kill interrupted)."""
  staging = staging_dir(model_dir, subdir)
  current = os.path.join(checkpoints_dir(model_dir, subdir), str(step))
  old = os.path.join(staging, f"{step}{_REPLACED}")
  os.rename(current, old)
  try:
    os.rename(os.path.join(staging, str(step)), current)
  except OSError:
    os.rename(old, current)
    raise
  shutil.rmtree(staging, ignore_errors=True)


def finish_swap(model_dir: PathLike, subdir: str = CHECKPOINTS) -> list[str]:
  """After a kill during `swap_in` or a staged write: moves a complete
  staged step (else the old copy) into a place left empty, then removes
  the staging folder. Returns what was moved, for the log."""
  staging = pathlib.Path(staging_dir(model_dir, subdir))
  if not staging.is_dir():
    return []
  moved = []
  root = pathlib.Path(checkpoints_dir(model_dir, subdir))
  entries = sorted(staging.iterdir(), key=lambda p: p.name.endswith(_REPLACED))
  for entry in entries:  # New complete copies first, then old ones.
    name = entry.name.removesuffix(_REPLACED)
    if name.isdigit() and (entry / STATE).is_dir() and not (root /
                                                            name).exists():
      root.mkdir(parents=True, exist_ok=True)
      os.rename(entry, root / name)
      moved.append(f"{entry} -> {root / name}")
  shutil.rmtree(staging, ignore_errors=True)
  return moved


def leaf_name(path: tuple[Any, ...]) -> str:
  """The '/'-joined name of a pytree key path (dict keys, attribute names
  of named tuples, sequence indices): the same name for a saved tree, its
  restored copy and orbax's metadata of it."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return param_tree.SEPARATOR.join(parts)


def flat_leaves(tree: Any) -> dict[str, Any]:
  """`{leaf_name: leaf}` of any pytree (e.g. a saved state tree)."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {leaf_name(path): leaf for path, leaf in leaves}


def host_checksums(flat: Mapping[str, Any]) -> dict[str, str]:
  """`integrity.tree_checksums` of a flat tree's arrays, on the host."""
  return integrity.tree_checksums(
      {name: np.asarray(value) for name, value in flat.items()})


def verify_checksums(flat: Mapping[str, Any], recorded: Mapping[str, str],
                     where: str) -> None:
  """Compares each array of `flat` that has a record with it.

  Raises:
    integrity.ChecksumMismatchError: naming the first damaged array.
  """
  for name, value in flat.items():
    integrity.verify_array(name, np.asarray(value), recorded.get(name), where)


def state_shapes(state_dir: PathLike
                 ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """`{leaf_name: (shape, dtype)}` of a step's `state/`, from its orbax
  metadata (reads no array)."""
  metadata = ocp.StandardCheckpointHandler().metadata(pathlib.Path(state_dir))
  if metadata is None:
    raise FileNotFoundError(f"{state_dir} holds no readable array metadata.")
  tree = metadata.tree
  return {name: (tuple(m.shape), np.dtype(m.dtype))
          for name, m in flat_leaves(tree).items()}


def read_meta(model_dir: PathLike, step: int,
              subdir: str = CHECKPOINTS) -> Optional[dict[str, Any]]:
  """A step's `meta` record, or None when the step has no `meta/`.

  Raises:
    integrity.ChecksumMismatchError: `meta/` is there but unreadable.
  """
  path = pathlib.Path(checkpoints_dir(model_dir, subdir)) / str(step) / META
  if not path.is_dir():
    return None
  try:
    return dict(ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
        path, args=ocp.args.JsonRestore()))
  except (OSError, ValueError, TypeError, json.JSONDecodeError) as e:
    raise integrity.ChecksumMismatchError(
        f"{path} is damaged ({type(e).__name__}: {e}); the checkpoint's "
        "checksums cannot be read. Use another step, or restore it from a "
        "good copy.") from e


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

  The arrays read are verified against the checksums `meta` recorded at
  save time, when it has them (runs written before that are not).

  Raises:
    RunCheckpointNotFoundError: see `resolve_step`.
    integrity.ChecksumMismatchError: an array read differs from its record.
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
  arrays = {n: np.asarray(flat[n]) for n in names}
  recorded = (read_meta(model_dir, step, subdir) or {}).get(CHECKSUMS) or {}
  verify_checksums({TRAINABLE + param_tree.SEPARATOR + n: a
                    for n, a in arrays.items()}, recorded, str(path))
  return arrays, step
