"""T5X native (msgpack + tensorstore) checkpoints: the layout, and writing.

A T5X checkpoint is a directory `checkpoint_<step>/` holding a msgpack file
named `checkpoint` with the tree

  {version, optimizer: {target: <params>, state: {step, param_states}}}

Small arrays are stored inline (flax's msgpack numpy extension); larger ones
are replaced by tensorstore spec dicts such as

  {driver: 'zarr', kvstore: {driver: 'gfile', path: 'target.encoder.x.y'},
   metadata: {...}}

whose arrays are zarr folders next to the msgpack file, named by the
flattened parameter path. `param_states` mirrors `target` with Adafactor's
slots {m, v, v_row, v_col} per parameter; slots Adafactor does not use (m
without momentum, v_row/v_col for unfactored parameters, v for factored ones)
hold a placeholder of shape [1].

The model directory T5X trains into holds one `checkpoint_<step>/` per save.

Reading is `sharded.open_checkpoint`'s (with the helpers here: resolving the
directory, the msgpack tree, the array folders); only `optimizer/target` is
read, never the Adafactor slots.

`save_t5x_checkpoint` writes the same layout (format version 3, relative
array paths, zarr v2 with gzip): the parameters, the step (int32) and
Adafactor's `param_states` in T5X's layout (`t5x_adafactor`), from the
run's optimizer state or zeros, so that T5X's own restore accepts it; what a
full-model run (runs/pretrain.gin) leaves for the next run's
INITIAL_CHECKPOINT_PATH. Its last file, written before the folder is renamed
into place, is the manifest of its files' checksums
(`integrity.MANIFEST_NAME`), which reads verify.

Reading checks what the msgpack file records against the array folders
before any data is read (`check_zarr_folder`): each folder's `.zarray` must
hold the recorded dtype and shape, and every chunk file must be there
(tensorstore would read a missing chunk as zeros).
"""

import itertools
import json
import math
import os
import pathlib
import re
import shutil
from typing import Any, Callable, Iterable, Mapping, Sequence

from flax import serialization
import ml_dtypes
import numpy as np
import tensorstore as ts

from prompt_tuning.checkpoints import integrity
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import t5x_adafactor

Params = param_tree.Params

CHECKPOINT_FILE = "checkpoint"
# A zarr v2 array folder's metadata file.
ZARR_METADATA = ".zarray"
_CHECKPOINT_PREFIX = "checkpoint_"
_CHECKPOINT_DIR = re.compile(rf"^{_CHECKPOINT_PREFIX}(\d+)$")
_TENSORSTORE_DRIVERS = ("zarr", "zarr3", "n5")
_LOCAL_KVSTORES = ("file", "gfile")
FORMAT_VERSION = 3
# Arrays of rank < 2 (layer-norm scales) are written inline, as T5X does;
# others as zarr folders in chunks of at most this many bytes.
_MAX_CHUNK_BYTES = 64 << 20
# T5X also writes the relative-position tables inline (the T5X-written
# fixture holds `relpos_bias/rel_embedding` [heads, buckets] in the msgpack).
_INLINE_SUFFIXES = ("relpos_bias/rel_embedding",)
# Adafactor slots are inline, as T5X writes them, up to this size (a
# first moment of a large matrix, with momentum, goes to a zarr folder).
_MAX_INLINE_SLOT_BYTES = 16 << 20


def checkpoint_name(step: int) -> str:
  """T5X's folder name of a step's checkpoint, `checkpoint_<step>`."""
  return f"{_CHECKPOINT_PREFIX}{int(step)}"


def checkpoint_steps(
    model_dir: str | os.PathLike[str]) -> dict[int, pathlib.Path]:
  """Returns {step: dir} for the `checkpoint_<step>` dirs holding a checkpoint.

  Directories without a msgpack `checkpoint` file (T5X's `.tmp` write
  folders, Orbax checkpoints) are left out.

  Args:
    model_dir: a T5X model directory.
  """
  steps = {}
  for child in pathlib.Path(model_dir).iterdir():
    m = _CHECKPOINT_DIR.match(child.name)
    if m and (child / CHECKPOINT_FILE).is_file():
      steps[int(m.group(1))] = child
  return dict(sorted(steps.items()))


def find_checkpoint_dir(path: str | os.PathLike[str]) -> pathlib.Path:
  """Resolves a checkpoint path to a `checkpoint_<step>` directory.

  Args:
    path: a checkpoint directory (holding the msgpack `checkpoint` file), the
      `checkpoint` file itself, or a model directory holding
      `checkpoint_<step>` subdirectories (the highest step is picked).

  Returns:
    The directory holding the msgpack `checkpoint` file.

  Raises:
    FileNotFoundError: when `path` does not exist or holds no checkpoint.
  """
  path = pathlib.Path(path).resolve()  # tensorstore needs absolute paths.
  if not path.exists():
    raise FileNotFoundError(f"T5X checkpoint path {path} does not exist.")
  if path.is_file():
    if path.name == CHECKPOINT_FILE:
      return path.parent
    raise FileNotFoundError(
        f"{path} is a file; expected a T5X checkpoint directory, its "
        f"'{CHECKPOINT_FILE}' file, or a model directory.")
  if (path / CHECKPOINT_FILE).is_file():
    return path
  steps = checkpoint_steps(path)
  if steps:
    return steps[max(steps)]
  candidates = sorted(c.name for c in path.iterdir()
                      if _CHECKPOINT_DIR.match(c.name))
  detail = (f" Its {', '.join(candidates[:5])} dirs have no msgpack "
            f"'{CHECKPOINT_FILE}' file (Orbax-format checkpoints are not "
            "supported)." if candidates else "")
  raise FileNotFoundError(
      f"No T5X checkpoint in {path}: expected a '{CHECKPOINT_FILE}' file or "
      f"checkpoint_<step> subdirectories.{detail}")


def _is_tensorstore_spec(node: Any) -> bool:
  return (isinstance(node, Mapping) and
          node.get("driver") in _TENSORSTORE_DRIVERS and
          ("kvstore" in node or "path" in node))


def _local_array_path(spec: Mapping[str, Any], ckpt_dir: pathlib.Path,
                      name: str) -> pathlib.Path:
  """Finds the local folder of the array a tensorstore spec points to.

  T5X writes paths relative to the checkpoint directory (format version 3);
  older checkpoints hold absolute or `gs://` paths, which we look up by their
  last component inside `ckpt_dir` when they are not there.
  """
  kvstore = spec.get("kvstore", {})
  if isinstance(kvstore, str):
    driver, path = "url", kvstore
  else:
    driver, path = kvstore.get("driver", "file"), kvstore.get("path", "")
  if "path" in spec:  # Older specs: kvstore base + array path.
    path = f"{path.rstrip('/')}/{spec['path']}" if path else spec["path"]
  path = re.sub(r"^file://", "", path)
  candidates = []
  if driver in _LOCAL_KVSTORES or driver == "url":
    if os.path.isabs(path):
      candidates.append(pathlib.Path(path))
    elif "://" not in path:
      candidates.append(ckpt_dir / path)
  basename = path.rstrip("/").rsplit("/", 1)[-1]
  if basename:
    candidates.append(ckpt_dir / basename)
  for candidate in candidates:
    if candidate.is_dir():
      return candidate
  raise FileNotFoundError(
      f"Array {name} of the T5X checkpoint {ckpt_dir} points to {driver} "
      f"path {path!r}, which is not a local folder (looked for "
      f"{', '.join(str(c) for c in candidates) or 'nothing'}). Copy the "
      "checkpoint directory, with its array folders, to local disk.")


def split_tree(tree: Mapping[str, Any]
               ) -> tuple[dict[str, Any], dict[str, Mapping[str, Any]]]:
  """Splits a msgpack subtree into inline leaves and tensorstore specs.

  Args:
    tree: e.g. the checkpoint's `optimizer/target`.

  Returns:
    ({'/'-joined name: inline leaf}, {'/'-joined name: tensorstore spec}),
    both in traversal order.
  """
  flat: dict[str, Any] = {}
  specs: dict[str, Mapping[str, Any]] = {}
  for name, leaf in param_tree.flatten_params(
      tree, is_leaf=_is_tensorstore_spec).items():
    if _is_tensorstore_spec(leaf):
      specs[name] = leaf
    else:
      flat[name] = leaf
  return flat, specs


def local_tensorstore_spec(spec: Mapping[str, Any], ckpt_dir: pathlib.Path,
                           name: str) -> dict[str, Any]:
  """A spec opening the local zarr folder a checkpoint spec points to."""
  return {"driver": spec["driver"],
          "kvstore": {"driver": "file",
                      "path": str(_local_array_path(spec, ckpt_dir, name))}}


def check_array_shape(name: str, shape: Any, spec: Mapping[str, Any],
                      ckpt_dir: pathlib.Path) -> None:
  """Raises ValueError when an array's shape differs from its spec's."""
  recorded = spec.get("metadata", {}).get("shape")
  if recorded is not None and list(shape) != list(recorded):
    raise ValueError(
        f"Array {name} in {ckpt_dir} has shape {list(shape)} but the "
        f"checkpoint records {list(recorded)}.")


def zarr_dtype(dtype: Any) -> np.dtype:
  """A zarr v2 dtype string ('<f4', or tensorstore's 'bfloat16') as numpy."""
  if dtype == "bfloat16":
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(dtype)


def zarr_chunk_names(metadata: Mapping[str, Any]) -> list[str]:
  """The chunk files of a fully written zarr v2 array, relative to its
  folder, from its `.zarray` `metadata` (shape, chunks,
  dimension_separator): '0.0', '0.1', ... ('0' for a scalar)."""
  shape, chunks = metadata["shape"], metadata["chunks"]
  if not shape:
    return ["0"]
  separator = metadata.get("dimension_separator") or "."
  grid = [math.ceil(int(d) / int(c)) for d, c in zip(shape, chunks)]
  return [separator.join(map(str, index))
          for index in itertools.product(*(range(n) for n in grid))]


def check_zarr_folder(folder: pathlib.Path, name: str,
                      spec: Mapping[str, Any]) -> dict[str, Any]:
  """Checks an array folder against the msgpack's spec before reading it.

  Args:
    folder: the zarr v2 folder (see `local_tensorstore_spec`).
    name: our parameter name, for errors.
    spec: the msgpack file's tensorstore spec of the array; its `metadata`
      dtype and shape, where recorded, must be the `.zarray`'s.

  Returns:
    The `.zarray` metadata.

  Raises:
    integrity.DamagedCheckpointError: naming the file, when `.zarray` is
      missing or unreadable, its dtype or shape differs from the recorded
      one, or (for arrays without a fill value: T5X's and ours) a chunk file
      is missing.
  """
  meta_path = folder / ZARR_METADATA
  try:
    metadata = json.loads(meta_path.read_text())
    shape, dtype = list(metadata["shape"]), metadata["dtype"]
    chunks = list(metadata["chunks"])
  except FileNotFoundError as e:
    raise integrity.DamagedCheckpointError(
        f"{meta_path} (array {name}) is missing. "
        f"{integrity.RESTORE_FIX}") from e
  except (ValueError, KeyError, TypeError) as e:
    raise integrity.DamagedCheckpointError(
        f"{meta_path} (array {name}) is not a zarr v2 metadata file ({e}). "
        f"{integrity.RESTORE_FIX}") from e
  recorded = spec.get("metadata") or {}
  for field, stored in (("dtype", dtype), ("shape", shape)):
    expected = recorded.get(field)
    if expected is not None and (
        list(expected) if field == "shape" else expected) != stored:
      raise integrity.DamagedCheckpointError(
          f"{meta_path} says {field} {stored} but the checkpoint's "
          f"{folder.parent / CHECKPOINT_FILE} records {expected} for array "
          f"{name}: the array folder does not belong to this checkpoint or "
          f"is damaged; it is not read. {integrity.RESTORE_FIX}")
  if metadata.get("fill_value") is None and len(chunks) == len(shape):
    missing = [c for c in zarr_chunk_names(metadata)
               if not (folder / c).is_file()]
    if missing:
      more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
      raise integrity.DamagedCheckpointError(
          f"Array {name} of the T5X checkpoint {folder.parent} is missing "
          f"chunk {missing[0]} ({folder / missing[0]}){more}: its data would "
          "read as zeros, so it is not read. "
          f"{integrity.RESTORE_FIX}")
  return metadata


def read_checkpoint_tree(
    ckpt_dir: pathlib.Path,
    checksums: integrity.FileChecksums | None = None) -> Mapping[str, Any]:
  """Reads (once) and checks the msgpack tree of a checkpoint directory.

  Args:
    ckpt_dir: a `checkpoint_<step>` directory (see `find_checkpoint_dir`).
    checksums: when given, the file's checksum is computed from the bytes
      read and verified against the directory's manifest (if any) first.

  Returns:
    The tree {version, optimizer: {target, state}}: inline arrays as numpy,
    the others as tensorstore spec dicts.

  Raises:
    integrity.DamagedCheckpointError: naming the file, when it does not
      decode (truncated or damaged) or differs from its manifest's checksum.
    ValueError: when the msgpack tree is not a T5X checkpoint.
  """
  path = ckpt_dir / CHECKPOINT_FILE
  data = path.read_bytes()
  if checksums is not None:
    checksums.check_bytes(path, data)
  try:
    tree = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack's and flax's errors: it does not decode.
    raise integrity.DamagedCheckpointError(
        f"{path} ({len(data)} bytes) is not a readable msgpack file ({e}): "
        f"truncated or damaged. {integrity.RESTORE_FIX}") from e
  optimizer = tree.get("optimizer") if isinstance(tree, Mapping) else None
  if not isinstance(optimizer, Mapping) or not isinstance(
      optimizer.get("target"), Mapping):
    keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
    raise ValueError(
        f"{ckpt_dir / CHECKPOINT_FILE} is not a T5X checkpoint: expected "
        f"{{optimizer: {{target, state}}}} at the top, found {keys}.")
  return tree


def tree_step(tree: Mapping[str, Any]) -> int | None:
  """The `optimizer/state/step` of a checkpoint tree; None if absent."""
  state = tree["optimizer"].get("state")
  state = state if isinstance(state, Mapping) else {}
  return int(np.asarray(state["step"])) if "step" in state else None


def _write_zarr(folder: pathlib.Path, array: np.ndarray,
                chunks: list[int] | None = None) -> dict[str, Any]:
  """Writes `array` as a zarr v2 folder; returns its (relative) spec.

  Args:
    folder: the array folder to create (its name goes into the spec).
    array: the data.
    chunks: the zarr chunk shape; default whole rows, at most
      `_MAX_CHUNK_BYTES` per chunk.
  """
  if chunks is None:
    row_bytes = array.dtype.itemsize * math.prod(array.shape[1:])
    rows = max(1, min(array.shape[0], _MAX_CHUNK_BYTES // max(row_bytes, 1)))
    chunks = [rows, *array.shape[1:]]
  metadata = {"chunks": list(chunks),
              "compressor": {"id": "gzip", "level": 1},
              "dtype": array.dtype.str, "shape": list(array.shape)}
  store = ts.open({"driver": "zarr",
                   "kvstore": {"driver": "file", "path": str(folder)},
                   "metadata": metadata},
                  create=True, delete_existing=True).result()
  store.write(array).result()
  return {"driver": "zarr",
          "kvstore": {"driver": "gfile", "path": folder.name},
          "metadata": metadata}


def _zarr_folder(directory: pathlib.Path, prefix: str,
                 name: str) -> pathlib.Path:
  """The array folder of '/'-joined `name`: `prefix.` + its '.'-joined path."""
  return directory / f"{prefix}.{name.replace(param_tree.SEPARATOR, '.')}"


def save_t5x_checkpoint(
    model_dir: str | os.PathLike[str],
    params: Params | Iterable[tuple[str, np.ndarray]],
    step: int,
    chunks: Callable[[Sequence[int], int], list[int]] | None = None,
    param_states: Mapping[str, Mapping[str, Any]] | None = None,
) -> pathlib.Path:
  """Writes `params` as the T5X checkpoint `model_dir/checkpoint_<step>/`.

  The checkpoint holds `{version: 3, optimizer: {target: params, state:
  {step, param_states}}}` as T5X writes it: float32 parameters, matrices as
  zarr folders named by the flattened path
  (`target.encoder.layers_0.mlp.wo.kernel`), vectors and relative-position
  tables inline; an int32 step; Adafactor's slots {m, v, v_col, v_row} of
  every parameter in T5X's layout (`t5x_adafactor`), inline. It is written
  to a temporary folder and renamed when complete, replacing an older one of
  the same step; `sharded.open_checkpoint` reads it back exactly. Its last
  file is the manifest of the others' checksums (`integrity.write_manifest`).

  Args:
    model_dir: where `checkpoint_<step>` goes (created if absent).
    params: nested dict of host arrays (our / Flaxformer's names), or an
      iterable of ('/'-joined name, array) pairs, e.g. a generator making
      one parameter at a time.
    step: the training step to record, e.g. the optimizer's counter.
    chunks: `(shape, itemsize) -> zarr chunk shape`; default whole rows of
      at most 64 MiB.
    param_states: {'/'-joined name: {v_row, v_col, v[, m]: host array}},
      e.g. `optimizers.adafactor_slots(opt_state)`; parameters without an
      entry (frozen ones, or all when None) get the zeros T5X starts with.

  Returns:
    The checkpoint directory.
  """
  model_dir = pathlib.Path(model_dir).resolve()
  final = model_dir / checkpoint_name(step)
  temporary = model_dir / f"{final.name}.tmp-{os.getpid()}"
  if temporary.exists():
    shutil.rmtree(temporary)
  temporary.mkdir(parents=True)
  target, states = {}, {}
  items = (param_tree.flatten_params(params).items()
           if isinstance(params, Mapping) else params)
  for name, value in items:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim < 2 or name.endswith(_INLINE_SUFFIXES):
      target[name] = array
    else:
      target[name] = _write_zarr(
          _zarr_folder(temporary, "target", name), array,
          None if chunks is None else chunks(array.shape, array.itemsize))
    slots = t5x_adafactor.param_state(
        array.shape, None if param_states is None else param_states.get(name))
    for slot, slot_value in slots.items():
      slot_name = f"{name}{param_tree.SEPARATOR}{slot}"
      states[slot_name] = (
          slot_value if slot_value.nbytes <= _MAX_INLINE_SLOT_BYTES else
          _write_zarr(_zarr_folder(temporary, "state.param_states",
                                   slot_name), slot_value))
    del array, slots
  tree = {"version": FORMAT_VERSION,
          "optimizer": {
              "target": param_tree.unflatten_params(target),
              "state": {
                  "param_states": param_tree.unflatten_params(states),
                  "step": np.asarray(int(step), t5x_adafactor.STEP_DTYPE)}}}
  (temporary / CHECKPOINT_FILE).write_bytes(
      serialization.msgpack_serialize(tree))
  integrity.write_manifest(temporary)  # Last: the folder is complete.
  if final.exists():
    shutil.rmtree(final)
  temporary.rename(final)
  return final


def remove_old_checkpoints(model_dir: str | os.PathLike[str],
                           keep: int) -> list[int]:
  """Deletes all but the `keep` newest `checkpoint_<step>` folders.

  Returns:
    The steps removed.
  """
  steps = sorted(checkpoint_steps(model_dir))
  removed = steps[:-keep] if keep > 0 else steps
  for step in removed:
    shutil.rmtree(pathlib.Path(model_dir) / checkpoint_name(step))
  return removed
