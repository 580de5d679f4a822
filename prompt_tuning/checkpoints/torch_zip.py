"""PyTorch `torch.save` zip files (`pytorch_model.bin`) read without torch.

The format (torch >= 1.6, what transformers writes): a zip archive of
uncompressed ("stored") entries under one top-level folder `<archive>/`:

  <archive>/data.pkl     the pickled object (a dict of tensors)
  <archive>/data/<key>   the raw bytes of one storage, little-endian
  <archive>/byteorder    'little' (absent in older files: little)
  <archive>/version      the format version

In `data.pkl` a tensor is a call of `torch._utils._rebuild_tensor_v2(
storage, storage_offset, size, stride, requires_grad, backward_hooks
[, metadata])`, and its storage a persistent id `('storage', <storage type,
e.g. torch.FloatStorage>, key, location, numel)` naming the record
`data/<key>`. Tensors may share one storage (tied weights) and be views into
it (offset, strides).

The pickle is read by `_RestrictedUnpickler`: `find_class` resolves only
the names above (and `collections.OrderedDict`, `torch._utils.
_rebuild_parameter`), to functions of this module that build no torch
object, and refuses every other global with `UnsafeCheckpointError` naming
the file and the object, before anything is called; BUILD (set an object's
state) is accepted on dicts only (a state dict's `_metadata`, ignored), so
nothing of this module can be altered either. No code of the file is ever
executed. The pure-Python unpickler is used (its opcode table can be
restricted); `data.pkl` is small, a few bytes per tensor. Storages are
memory-mapped straight from the zip file (the entries are stored
uncompressed), so opening reads only the pickle, and a read touches only the
bytes of the slice asked for.

`TorchZipFile` offers the subset of `safetensors.safe_open`'s interface the
checkpoint reader uses (`keys`, `get_slice(name)` with `get_shape`,
`get_dtype` and numpy indexing, context manager).
"""

import collections
import dataclasses
import os
import pathlib
import pickle
import struct
import zipfile
from typing import Any, Iterator

import ml_dtypes
import numpy as np

# torch storage type -> (safetensors dtype name, numpy dtype).
_STORAGE_DTYPES = {
    "DoubleStorage": ("F64", np.dtype("<f8")),
    "FloatStorage": ("F32", np.dtype("<f4")),
    "HalfStorage": ("F16", np.dtype("<f2")),
    "BFloat16Storage": ("BF16", np.dtype(ml_dtypes.bfloat16)),
    "LongStorage": ("I64", np.dtype("<i8")),
    "IntStorage": ("I32", np.dtype("<i4")),
    "ShortStorage": ("I16", np.dtype("<i2")),
    "CharStorage": ("I8", np.dtype(np.int8)),
    "ByteStorage": ("U8", np.dtype(np.uint8)),
    "BoolStorage": ("BOOL", np.dtype(np.bool_)),
}
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"


class UnsafeCheckpointError(pickle.UnpicklingError):
  """A PyTorch checkpoint's pickle names something other than tensors."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """A torch storage class named in the pickle (never a torch object)."""

  name: str

  @property
  def dtype(self) -> np.dtype:
    return _STORAGE_DTYPES[self.name][1]


@dataclasses.dataclass(frozen=True, eq=False)
class _Storage:
  """One `data/<key>` record: `numel` elements of `dtype`."""

  key: str
  dtype_name: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass(frozen=True, eq=False)
class _TensorRef:
  """A tensor of the pickle: a strided view into a storage."""

  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
  if (not isinstance(value, (tuple, list)) or
      not all(isinstance(v, int) and v >= 0 for v in value)):
    raise UnsafeCheckpointError(f"tensor {what} {value!r} is not a tuple of "
                                "non-negative ints")
  return tuple(value)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any,
                       stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None
                       ) -> _TensorRef:
  """Stands in for `torch._utils._rebuild_tensor_v2`: records the view."""
  del requires_grad, backward_hooks, metadata  # Not part of the values.
  if not isinstance(storage, _Storage):
    raise UnsafeCheckpointError(f"tensor storage {storage!r} is not a "
                                "storage record")
  if not isinstance(storage_offset, int) or storage_offset < 0:
    raise UnsafeCheckpointError(f"tensor offset {storage_offset!r}")
  shape = _int_tuple(size, "size")
  strides = _int_tuple(stride, "stride")
  if len(shape) != len(strides):
    raise UnsafeCheckpointError(f"tensor size {shape} and stride {strides} "
                                "differ in rank")
  if all(shape):
    last = storage_offset + sum((d - 1) * s for d, s in zip(shape, strides))
    if last >= storage.numel:
      raise UnsafeCheckpointError(
          f"tensor of size {shape}, stride {strides}, offset "
          f"{storage_offset} reaches past its storage of {storage.numel} "
          "elements")
  return _TensorRef(storage, storage_offset, shape, strides)


def _rebuild_parameter(data: Any, requires_grad: Any = False,
                       backward_hooks: Any = None) -> Any:
  """Stands in for `torch._utils._rebuild_parameter`: the tensor itself."""
  del requires_grad, backward_hooks
  if not isinstance(data, _TensorRef):
    raise UnsafeCheckpointError(f"parameter data {data!r} is not a tensor")
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle._Unpickler):  # pylint: disable=protected-access
  """Resolves only tensor-rebuild records; maps storages to zip records."""

  dispatch = dict(pickle._Unpickler.dispatch)  # pylint: disable=protected-access

  def __init__(self, file: Any, *, path: pathlib.Path, prefix: str,
               names: set[str]):
    super().__init__(file)
    self._path = path
    self._prefix = prefix
    self._names = names
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise UnsafeCheckpointError(
        f"Refusing to load {self._path}: its pickle names {module}.{name}, "
        "which is not a tensor record (only torch tensors, their storages "
        "and dicts are read; no code from the file is run).")

  def persistent_load(self, pid: Any) -> _Storage:
    if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage" or
        not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str) or
        not isinstance(pid[4], int) or pid[4] < 0):
      raise UnsafeCheckpointError(
          f"Refusing to load {self._path}: unsupported persistent id "
          f"{pid!r} (expected ('storage', <torch storage type>, key, "
          "location, numel)).")
    _, storage_type, key, _, numel = pid
    record = f"{self._prefix}data/{key}"
    if record not in self._names:
      raise ValueError(f"{self._path}: storage record {record} is missing.")
    if key in self.storages:
      storage = self.storages[key]
      if storage.dtype_name != _STORAGE_DTYPES[storage_type.name][0]:
        raise ValueError(f"{self._path}: storage {key} is read with two "
                         "dtypes.")
      return storage
    dtype_name, dtype = _STORAGE_DTYPES[storage_type.name]
    storage = _Storage(key, dtype_name, dtype, numel)
    self.storages[key] = storage
    return storage

  def load_build(self) -> None:
    """BUILD on a dict (a state dict's `_metadata`): state ignored."""
    state = self.stack.pop()
    del state
    if not isinstance(self.stack[-1], dict):
      raise UnsafeCheckpointError(
          f"Refusing to load {self._path}: its pickle sets the state of "
          f"{self.stack[-1]!r}; only dicts' states are accepted.")

  dispatch[pickle.BUILD[0]] = load_build


class _Slice:
  """`safe_open(...).get_slice(name)`'s interface over a numpy view."""

  def __init__(self, array: np.ndarray, dtype_name: str):
    self._array = array
    self._dtype_name = dtype_name

  def get_shape(self) -> list[int]:
    return list(self._array.shape)

  def get_dtype(self) -> str:
    return self._dtype_name

  def __getitem__(self, index: Any) -> np.ndarray:
    return self._array[index]


def _data_offset(file: Any, info: zipfile.ZipInfo) -> int:
  """Where the bytes of a stored zip entry start in the file."""
  file.seek(info.header_offset)
  header = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
  if header[0] != _LOCAL_HEADER_SIGNATURE:
    raise ValueError(f"bad local header for {info.filename}")
  name_length, extra_length = header[-2], header[-1]
  return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


class TorchZipFile:
  """A `torch.save` zip file's tensors, memory-mapped, without torch.

  Attributes:
    path: the file.
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = pathlib.Path(path)
    if not zipfile.is_zipfile(self.path):
      raise ValueError(
          f"{self.path} is not a PyTorch zip checkpoint (torch >= 1.6 "
          "torch.save format); older pickle or tar files cannot be read "
          "without torch.")
    with zipfile.ZipFile(self.path) as archive, self.path.open("rb") as raw:
      infos = {info.filename: info for info in archive.infolist()}
      pickles = [n for n in infos if n.endswith("data.pkl") and
                 n.count("/") == 1]
      if len(pickles) != 1:
        raise ValueError(f"{self.path} has {len(pickles)} '<archive>/"
                         "data.pkl' entries; a PyTorch checkpoint has one.")
      prefix = pickles[0][:-len("data.pkl")]
      order = infos.get(f"{prefix}byteorder")
      if order is not None and archive.read(order).strip() != b"little":
        raise ValueError(f"{self.path} is big-endian; only little-endian "
                         "PyTorch checkpoints can be read.")
      with archive.open(pickles[0]) as f:
        unpickler = _RestrictedUnpickler(f, path=self.path, prefix=prefix,
                                         names=set(infos))
        try:
          obj = unpickler.load()
        except UnsafeCheckpointError:
          raise
        except (pickle.UnpicklingError, EOFError, KeyError, IndexError,
                TypeError, AttributeError) as e:
          raise ValueError(f"{self.path}: {pickles[0]} is not a readable "
                           f"pickle of tensors ({type(e).__name__}: {e})."
                           ) from e
      offsets = {}
      for key, storage in unpickler.storages.items():
        info = infos[f"{prefix}data/{key}"]
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
          raise ValueError(f"{self.path}: storage {key} is compressed or "
                           "encrypted; PyTorch writes stored entries.")
        if info.file_size < storage.numel * storage.dtype.itemsize:
          raise ValueError(
              f"{self.path}: storage {key} has {info.file_size} bytes, "
              f"fewer than its {storage.numel} elements need.")
        offsets[key] = _data_offset(raw, info)
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, _TensorRef)
        for k, v in obj.items()):
      raise ValueError(f"{self.path} does not hold a dict of named tensors "
                       "(a state dict).")
    self._tensors: dict[str, _TensorRef] = dict(obj)
    self._offsets = offsets
    self._maps: dict[str, np.ndarray] = {}

  def keys(self) -> list[str]:
    return list(self._tensors)

  def __iter__(self) -> Iterator[str]:
    return iter(self._tensors)

  def _storage_array(self, storage: _Storage) -> np.ndarray:
    """The whole storage as a 1-D read-only memmap (shared by its views)."""
    if storage.key not in self._maps:
      if storage.numel == 0:
        self._maps[storage.key] = np.zeros(0, storage.dtype)
      else:
        self._maps[storage.key] = np.memmap(
            self.path, dtype=storage.dtype, mode="r",
            offset=self._offsets[storage.key], shape=(storage.numel,))
    return self._maps[storage.key]

  def get_slice(self, name: str) -> _Slice:
    """The tensor `name` as a lazily read strided view."""
    ref = self._tensors[name]
    base = self._storage_array(ref.storage)
    itemsize = ref.storage.dtype.itemsize
    if all(ref.shape):
      view = np.lib.stride_tricks.as_strided(
          base[ref.offset:], shape=ref.shape,
          strides=tuple(s * itemsize for s in ref.stride), writeable=False)
    else:
      view = np.zeros(ref.shape, ref.storage.dtype)
    return _Slice(view, ref.storage.dtype_name)

  def storage_key(self, name: str) -> str:
    """The storage record a tensor views (tied tensors share one)."""
    return self._tensors[name].storage.key

  def close(self) -> None:
    self._maps.clear()

  def __enter__(self) -> "TorchZipFile":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()
