"""Which weights file of a Hugging Face T5 directory is read, and how.

`save_pretrained` writes one of these (a sharded one as numbered shards plus
an `*.index.json` whose `weight_map` names each tensor's shard). When a
directory holds several, the first found in this order is read:

  model.safetensors[.index.json]      safetensors, memory-mapped
  pytorch_model.bin[.index.json]      PyTorch zip, read without torch
                                      (`torch_zip`: a restricted unpickler,
                                      storages memory-mapped)
  flax_model.msgpack[.index.json]     Flax msgpack (`flax.serialization.
                                      msgpack_restore`, read whole)
  tf_model.h5                         Keras h5 weights via h5py (read per
                                      slice); a sharded tf_model.h5.index.json
                                      is refused

Every format is offered through the subset of `safetensors.safe_open`'s
interface that `sharded` uses (`keys()`, `get_slice(name)` with
`get_shape()`, `get_dtype()` as a safetensors dtype name and numpy slicing,
a context manager), under PyTorch's tensor names and layouts, so that one
name mapping (`hf`) serves them all.

Flax names and layouts differ from PyTorch's: the tree
`encoder/block/0/layer/0/SelfAttention/q/kernel` is
`encoder.block.0.layer.0.SelfAttention.q.weight` transposed (Flax `Dense`
kernels are [in, out], PyTorch `Linear` weights [out, in]); an `embedding`
(`shared`, `relative_attention_bias`) is the PyTorch `weight` as is, and so
is a layer norm's `weight`. A tied model has no `lm_head` in the file.

TensorFlow's h5 file (Keras `save_weights`): the root attribute
`layer_names` lists the layers ('shared', 'encoder', 'decoder', 'lm_head'),
each layer group's `weight_names` its variables, stored at
`<layer>/<variable name>`, e.g. `encoder/tft5_for_conditional_generation/
encoder/block_._0/layer_._1/DenseReluDense/wi/kernel:0`. Dropping the model
scope and ':0', with 'block_._0' -> 'block.0', 'shared/shared' -> 'shared',
`kernel` ([in, out], transposed) and `embeddings` -> `weight`, gives the
PyTorch name. The embedding is stored again in the encoder and decoder
layers; the first is read.
"""

import dataclasses
import json
import os
import pathlib
from typing import Any, Iterator

import h5py
import ml_dtypes
import numpy as np
import safetensors
from flax import serialization

from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import torch_zip

SAFETENSORS = "safetensors"
PYTORCH = "pytorch"
FLAX = "flax"
TF = "tf"

# Format -> (single file, index file), in order of preference.
WEIGHT_FILES = {
    SAFETENSORS: (hf.SAFETENSORS_FILE, hf.SAFETENSORS_INDEX_FILE),
    PYTORCH: ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    FLAX: ("flax_model.msgpack", "flax_model.msgpack.index.json"),
    TF: ("tf_model.h5", None),
}
_DESCRIPTIONS = {
    SAFETENSORS: "safetensors",
    PYTORCH: "PyTorch zip, read without torch",
    FLAX: "Flax msgpack",
    TF: "TensorFlow h5",
}
# Recognised, not read.
UNREADABLE_FILES = ("tf_model.h5.index.json",)
# safetensors' dtype names (`get_dtype()` of every format's reader) as numpy.
SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NUMPY_DTYPE_NAMES = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16", np.dtype(ml_dtypes.bfloat16): "BF16",
}


@dataclasses.dataclass(frozen=True)
class WeightFiles:
  """The weights a Hugging Face directory's tensors are read from.

  Attributes:
    format: SAFETENSORS, PYTORCH, FLAX or TF.
    files: {file name: the tensor names its index puts there (None: all)}.
    index: the index file's name, when sharded.
    others: the other weights files in the directory, not read.
  """

  format: str
  files: dict[str, list[str] | None] = dataclasses.field(repr=False)
  index: str | None = None
  others: tuple[str, ...] = ()

  @property
  def read_from(self) -> str:
    """The file (or index) read, e.g. 'pytorch_model.bin'."""
    return self.index or next(iter(self.files))

  def note(self, model_dir: str | os.PathLike[str]) -> str:
    """Which file was read, for a run's opening notes."""
    text = (f"Hugging Face checkpoint {model_dir}: reading {self.read_from} "
            f"({_DESCRIPTIONS[self.format]})")
    if self.others:
      text += (f"; also there, not read: {', '.join(self.others)} "
               "(safetensors, then pytorch_model.bin, flax_model.msgpack, "
               "tf_model.h5 is read)")
    return text + "."


def _all_weight_names() -> list[str]:
  names = [n for pair in WEIGHT_FILES.values() for n in pair if n]
  return names + list(UNREADABLE_FILES)


def _indexed_files(model_dir: pathlib.Path,
                   index: str) -> dict[str, list[str] | None]:
  """{shard: tensor names} from an index file's weight map."""
  index_path = model_dir / index
  with index_path.open() as f:
    weight_map = json.load(f).get("weight_map")
  if not isinstance(weight_map, dict) or not weight_map:
    raise ValueError(f"{index_path} has no 'weight_map'.")
  files: dict[str, list[str] | None] = {}
  for name, shard in weight_map.items():
    names = files.setdefault(shard, [])
    assert names is not None
    names.append(name)
  for shard in files:
    if not (model_dir / shard).is_file():
      raise FileNotFoundError(
          f"Shard {shard} named in {index_path} is missing from {model_dir}.")
  return files


def find_weight_files(model_dir: str | os.PathLike[str]) -> WeightFiles:
  """Picks the weights to read from a Hugging Face directory.

  Args:
    model_dir: the directory.

  Returns:
    The first format present in `WEIGHT_FILES`' order; a sharded index
    before the single file of the same format.

  Raises:
    FileNotFoundError: when there is no readable weights file (naming what
      is there) or a shard of the index is missing.
    ValueError: when the index has no weight map.
  """
  model_dir = pathlib.Path(model_dir)
  present = [n for n in _all_weight_names() if (model_dir / n).is_file()]
  for fmt, (single, index) in WEIGHT_FILES.items():
    if index and index in present:
      files, chosen = _indexed_files(model_dir, index), index
      if fmt == FLAX:  # Its weight map names Flax paths.
        files = {shard: [flax_name_to_hf_name(tuple(n.split("/")))[0]
                         for n in names or ()]
                 for shard, names in files.items()}
    elif single in present:
      files, chosen = {single: None}, single
    else:
      continue
    others = tuple(n for n in present if n != chosen)
    return WeightFiles(fmt, files, chosen if chosen == index else None,
                       others)
  readable = ", ".join(n for pair in WEIGHT_FILES.values() for n in pair
                       if n)
  unreadable = [n for n in UNREADABLE_FILES if n in present]
  raise FileNotFoundError(
      f"No weights file in {model_dir}: expected {readable}"
      + (f" (found {', '.join(unreadable)}, which cannot be read: in an "
         "environment with transformers, load the model and call "
         "save_pretrained(dir, safe_serialization=True))"
         if unreadable else "") + ".")


class _ArraySlice:
  """`safe_open(...).get_slice(name)`'s interface over a numpy array."""

  def __init__(self, array: np.ndarray):
    if array.dtype not in _NUMPY_DTYPE_NAMES:
      raise ValueError(f"unsupported dtype {array.dtype}")
    self._array = array

  def get_shape(self) -> list[int]:
    return list(self._array.shape)

  def get_dtype(self) -> str:
    return _NUMPY_DTYPE_NAMES[self._array.dtype]

  def __getitem__(self, index: Any) -> np.ndarray:
    return self._array[index]


def flax_name_to_hf_name(path: tuple[str, ...]) -> tuple[str, bool]:
  """A Flax T5 parameter path -> (PyTorch tensor name, transpose?).

  E.g. ('encoder', 'block', '0', 'layer', '1', 'DenseReluDense', 'wo',
  'kernel') -> ('encoder.block.0.layer.1.DenseReluDense.wo.weight', True).
  """
  *parents, leaf = path
  transpose = leaf == "kernel"
  if leaf in ("kernel", "embedding"):
    leaf = "weight"
  return ".".join([*parents, leaf]), transpose


class FlaxMsgpackFile:
  """A Flax `flax_model.msgpack` (or one shard) under PyTorch names.

  Attributes:
    path: the file.
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = pathlib.Path(path)
    try:
      tree = serialization.msgpack_restore(self.path.read_bytes())
    except Exception as e:  # msgpack raises several kinds.
      raise ValueError(f"{self.path} is not a Flax msgpack file: {e}") from e
    if not isinstance(tree, dict):
      raise ValueError(f"{self.path} does not hold a Flax parameter tree.")
    if set(tree) == {"params"}:
      tree = tree["params"]
    self._arrays: dict[str, np.ndarray] = {}

    def visit(node: Any, path: tuple[str, ...]) -> None:
      if isinstance(node, dict):
        for key, value in node.items():
          visit(value, path + (str(key),))
        return
      array = np.asarray(node)
      name, transpose = flax_name_to_hf_name(path)
      if name in self._arrays:
        raise ValueError(f"{self.path}: two parameters map to {name}.")
      self._arrays[name] = array.T if transpose else array

    visit(tree, ())

  def keys(self) -> list[str]:
    return list(self._arrays)

  def __iter__(self) -> Iterator[str]:
    return iter(self._arrays)

  def get_slice(self, name: str) -> _ArraySlice:
    return _ArraySlice(self._arrays[name])

  def __enter__(self) -> "FlaxMsgpackFile":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self._arrays.clear()


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def tf_name_to_hf_name(name: str) -> tuple[str, bool]:
  """A TF T5 variable name -> (PyTorch tensor name, transpose?).

  E.g. 'tft5_for_conditional_generation/encoder/block_._0/layer_._0/
  SelfAttention/q/kernel:0' -> ('encoder.block.0.layer.0.SelfAttention.q.
  weight', True); 'shared/shared/embeddings:0' -> ('shared.weight', False).
  """
  parts = name.split(":")[0].split("/")
  tops = ("shared", "encoder", "decoder", "lm_head")
  while len(parts) > 1 and parts[0] not in tops:  # The model's scope.
    parts = parts[1:]
  parts = [p.replace("_._", ".") for i, p in enumerate(parts)
           if i == 0 or p != parts[i - 1]]
  leaf = parts[-1]
  transpose = leaf == "kernel"
  if leaf in ("kernel", "embeddings"):
    parts[-1] = "weight"
  return ".".join(parts), transpose


class _H5Slice:
  """`get_slice`'s interface over an h5py dataset (transposed if asked)."""

  def __init__(self, dataset: h5py.Dataset, transpose: bool):
    if dataset.dtype not in _NUMPY_DTYPE_NAMES:
      raise ValueError(f"unsupported dtype {dataset.dtype}")
    self._dataset = dataset
    self._transpose = transpose

  def get_shape(self) -> list[int]:
    shape = list(self._dataset.shape)
    return shape[::-1] if self._transpose else shape

  def get_dtype(self) -> str:
    return _NUMPY_DTYPE_NAMES[self._dataset.dtype]

  def __getitem__(self, index: Any) -> np.ndarray:
    if not self._transpose:
      return self._dataset[index]
    if (isinstance(index, tuple) and len(index) == self._dataset.ndim and
        all(isinstance(i, slice) for i in index)):
      return self._dataset[index[::-1]].T
    return self._dataset[()].T[index]


class TFH5File:
  """A TensorFlow `tf_model.h5` under PyTorch names (read per slice).

  Attributes:
    path: the file.
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = pathlib.Path(path)
    try:
      self._file = h5py.File(self.path, "r")
    except OSError as e:
      raise ValueError(f"{self.path} is not an h5 file: {e}") from e
    self._datasets: dict[str, tuple[h5py.Dataset, bool]] = {}
    try:
      if "layer_names" not in self._file.attrs:
        raise ValueError(f"{self.path} has no 'layer_names': not Keras "
                         "h5 weights.")
      for layer in self._file.attrs["layer_names"]:
        group = self._file[_text(layer)]
        for weight in group.attrs.get("weight_names", ()):
          weight = _text(weight)
          name, transpose = tf_name_to_hf_name(weight)
          if name not in self._datasets:  # Repeated copies of `shared`.
            self._datasets[name] = (group[weight], transpose)
    except BaseException:
      self._file.close()
      raise

  def keys(self) -> list[str]:
    return list(self._datasets)

  def __iter__(self) -> Iterator[str]:
    return iter(self._datasets)

  def get_slice(self, name: str) -> _H5Slice:
    return _H5Slice(*self._datasets[name])

  def __enter__(self) -> "TFH5File":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self._datasets.clear()
    self._file.close()


def open_weight_file(path: str | os.PathLike[str], fmt: str) -> Any:
  """Opens one weights file (or shard) of format `fmt` for reading.

  Returns:
    An object with `keys()`, `get_slice(name)` and `__exit__`, as
    `safetensors.safe_open` returns; names and layouts are PyTorch's.
  """
  if fmt == SAFETENSORS:
    return safetensors.safe_open(path, framework="numpy")
  if fmt == PYTORCH:
    return torch_zip.TorchZipFile(path)
  if fmt == FLAX:
    return FlaxMsgpackFile(path)
  if fmt == TF:
    return TFH5File(path)
  raise ValueError(f"Unknown Hugging Face weights format {fmt!r}.")
