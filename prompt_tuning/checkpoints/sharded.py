"""The one reader of pre-trained checkpoints (T5X and Hugging Face).

A checkpoint is opened once and read parameter by parameter, either straight
into shardings or whole into host memory:

  record = sharded.open_checkpoint(path)   # headers only, no array data
  record.check(jax.eval_shape(...))        # names and shapes, strictly
  params = record.read_all(shardings)      # {name: jax.Array}, sharded
  params = record.read_all()               # {name: np.ndarray}, on the host
  step = record.step                       # from the same msgpack read

  params = sharded.read_params(path, shapes)  # open, check, read to host

The host mode (no sharding) serves whoever wants the whole tree in host
memory: prediction, analyses, scripts, tests.

`open_checkpoint` reads a T5X checkpoint's msgpack file once (step, version,
inline arrays, tensorstore specs; the zarr stores are opened lazily, on the
first read of each), or a Hugging Face directory's config.json and weights
(`hf_formats`: safetensors, PyTorch .bin memory-mapped, TF h5 per slice,
Flax msgpack whole; `record.weights` says which). Names are ours.

`CheckpointRecord.read(name, sharding)` builds the global `jax.Array` from
this process's addressable shards only: for each DISTINCT index of
`sharding.addressable_devices_indices_map(shape)` the slice is read once
(replicated devices share one host read), cast, put on each device holding
it, and the pieces assembled with `jax.make_array_from_single_device_arrays`.
Host memory holds at most one parameter's distinct slices at a time and no
device ever holds an unsharded copy of a sharded parameter. A slice of a
zarr array still decompresses every chunk it touches: T5X chunks whole
arrays of up to 64 MiB, so a model-parallel column slice of a 64 MiB kernel
decompresses the whole kernel (and keeps only its columns).

Counting reads. Every read of array data, whatever the format, goes through
the module-level `_read_slice(source, handle, index)` (tests monkeypatch it
with a counting wrapper), and `CheckpointRecord.read_counts` counts its calls
by `ArraySource.name`: our parameter name, or the Hugging Face tensor name
for the comparisons of embedding copies that `open_checkpoint` makes.

Hugging Face embedding copies. `shared.weight`, `encoder.embed_tokens.weight`
and `decoder.embed_tokens.weight` must be equal (and, when the config scales
tied logits, `lm_head.weight` must equal the embedding). transformers'
safetensors files hold only `shared.weight`; a PyTorch .bin holds the tied
copies too (one shared storage); when a file holds copies, `open_checkpoint`
compares them in row blocks of at most 64 MiB (`check_copies=False` skips
it and trusts `shared.weight`).

Verified reads. The first read of each array checks and hashes the files it
uses (`integrity.FileChecksums`): a T5X array's folder (its `.zarray` must
hold the dtype and shape the msgpack records and every chunk must be there:
`t5x.check_zarr_folder`; then every file is hashed), a Hugging Face weights
file (once); the msgpack file and config.json at open. Where the checkpoint
has a manifest (written by this project) each checksum must match it, else
the read fails naming the file; without one they are recorded.
`content_fingerprint()` combines the checksums of every file the record's
reads use, reusing those already computed.
"""

import collections
import dataclasses
import os
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
import tensorstore as ts

from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import hf_formats
from prompt_tuning.checkpoints import integrity
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import pretrained
from prompt_tuning.checkpoints import t5x
from prompt_tuning.checkpoints import validation
from prompt_tuning.models import config as config_lib

Params = param_tree.Params
# One slice per dimension, with explicit start and stop (step 1).
Index = tuple[slice, ...]

_COMPARE_BLOCK_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
  """Where the data of one array lives in a checkpoint.

  Attributes:
    name: our parameter name ('encoder/layers_0/mlp/wo/kernel'); for a
      Hugging Face tensor only compared, never returned, its own name.
    kind: 'inline' (a numpy array from the T5X msgpack file), 'tensorstore'
      (a zarr folder of a T5X checkpoint), or the `hf_formats` format of a
      Hugging Face weights file holding it ('safetensors', 'pytorch',
      'flax', 'tf').
    key: the checkpoint's own name for it: the T5X '/'-joined path, or the
      Hugging Face tensor name.
    shape: OUR shape (the stored one reversed when `transpose`).
    dtype: the stored dtype.
    transpose: whether the stored tensor is our parameter transposed (a
      PyTorch [out, in] weight for our [in, out] kernel).
    inline: the array, for 'inline'.
    spec: the local tensorstore spec ({driver, kvstore: file path}), for
      'tensorstore'.
    recorded: the msgpack's own spec (to check the store's shape), for
      'tensorstore'.
    file: the Hugging Face weights file name (None for T5X).
  """

  name: str
  kind: str
  key: str
  shape: tuple[int, ...]
  dtype: np.dtype
  transpose: bool = False
  inline: np.ndarray | None = None
  spec: Mapping[str, Any] | None = None
  recorded: Mapping[str, Any] | None = None
  file: str | None = None


def _read_slice(source: ArraySource, handle: Any, index: Index) -> np.ndarray:
  """Reads `index` of one array into host memory: every data read is this.

  Args:
    source: the array.
    handle: the open `ts.TensorStore` ('tensorstore'), the open Hugging
      Face weights file (`hf_formats.open_weight_file`), or None
      ('inline').
    index: the slice in OUR orientation, one `slice(start, stop)` per
      dimension.

  Returns:
    The slice, in the stored dtype, shaped as `index` selects from
    `source.shape` (a transposed tensor is read at the reversed index and
    transposed back).
  """
  if source.kind == "inline":
    return np.array(source.inline[index])
  if source.kind == "tensorstore":
    return np.asarray(handle[index].read().result())
  if source.transpose:
    return handle.get_slice(source.key)[index[::-1]].T
  return handle.get_slice(source.key)[index]


def _normalize(index: tuple[Any, ...], shape: tuple[int, ...]) -> Index:
  """`slice(start, stop)` per dimension for a device's index."""
  index = tuple(index) + (slice(None),) * (len(shape) - len(index))
  out = []
  for part, dim in zip(index, shape):
    if not isinstance(part, slice):
      raise ValueError(f"Unsupported shard index {index} for shape {shape}.")
    start, stop, step = part.indices(dim)
    if step != 1:
      raise ValueError(f"Unsupported strided shard index {index}.")
    out.append(slice(start, stop))
  return tuple(out)


def _slice_shape(index: Index) -> tuple[int, ...]:
  return tuple(s.stop - s.start for s in index)


class CheckpointRecord:
  """An opened checkpoint: names, shapes and step, and sharded reads.

  Attributes:
    format: the checkpoint's `pretrained.CheckpointFormat`.
    path: the resolved path: the T5X `checkpoint_<step>` directory, or the
      Hugging Face model directory.
    step: the T5X `optimizer/state/step`; None for Hugging Face (or when not
      recorded).
    version: the T5X format version; None for Hugging Face.
    config: the Hugging Face checkpoint's own T5Config (from config.json);
      None for T5X.
    hf_config: the parsed config.json; None for T5X.
    weights: the Hugging Face weights file(s) read (`hf_formats.WeightFiles`:
      format, files, others present and not read); None for T5X.
    sources: {our parameter name: ArraySource}.
    read_counts: {ArraySource.name: calls of `_read_slice` for it}.
    checksums: the checksums of the files read so far, verified against
      the checkpoint's manifest where it has one.
  """

  def __init__(self, *, fmt: pretrained.CheckpointFormat, path: pathlib.Path,
               sources: Mapping[str, ArraySource], step: int | None = None,
               version: int | None = None,
               config: config_lib.T5Config | None = None,
               hf_config: Mapping[str, Any] | None = None,
               files: Mapping[str, Any] | None = None,
               weights: hf_formats.WeightFiles | None = None,
               checksums: integrity.FileChecksums | None = None):
    self.format = fmt
    self.path = path
    self.step = step
    self.version = version
    self.config = config
    self.hf_config = hf_config
    self.sources = dict(sources)
    self.read_counts: collections.Counter[str] = collections.Counter()
    self.weights = weights
    self._files = dict(files or {})  # weights file name -> open file.
    self._stores: dict[str, ts.TensorStore] = {}
    self.checksums = checksums or integrity.FileChecksums(path)

  @property
  def description(self) -> str:
    """How errors name this checkpoint."""
    if self.format == pretrained.CheckpointFormat.HUGGING_FACE:
      return hf.checkpoint_source(self.path)
    return f"the T5X checkpoint {self.path}"

  @property
  def names(self) -> tuple[str, ...]:
    """Our parameter names, '/'-joined."""
    return tuple(self.sources)

  @property
  def flat_shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
    """{name: ShapeDtypeStruct(our shape, stored dtype)}."""
    return {name: jax.ShapeDtypeStruct(s.shape, s.dtype)
            for name, s in self.sources.items()}

  @property
  def shapes(self) -> Params:
    """Nested dict of `jax.ShapeDtypeStruct`s (our shapes, stored dtypes),
    e.g. for `validation.check_params(expected, record.shapes, ...)`."""
    return param_tree.unflatten_params(self.flat_shapes)

  def check(self, expected_shapes: Mapping[str, Any], *,
            expected_source: str = "the model") -> Params:
    """Checks names and shapes against `expected_shapes`; reads no data.

    Args:
      expected_shapes: see `validation.check_params`.
      expected_source: what `expected_shapes` describes, for the error.

    Returns:
      The checkpoint's `shapes`, in the order of `expected_shapes`.

    Raises:
      validation.ParamMismatchError: listing every missing, unexpected or
        mis-shaped parameter.
    """
    hint = (hf.hf_name_hint
            if self.format == pretrained.CheckpointFormat.HUGGING_FACE
            else None)
    return validation.check_params(expected_shapes, self.shapes,
                                   source=self.description,
                                   expected_source=expected_source,
                                   name_hint=hint)

  def _source(self, name: str) -> ArraySource:
    if name not in self.sources:
      raise KeyError(f"{self.description} has no parameter {name!r}; it has "
                     f"{len(self.sources)}, e.g. {', '.join(self.names[:3])}.")
    return self.sources[name]

  def _handle(self, source: ArraySource) -> Any:
    """The open store or file of `source`, its files checked and hashed on
    first use (zarr stores open then)."""
    if source.file is not None:
      self.checksums.check(self.path / source.file)  # Once per file.
      return self._files[source.file]
    if source.kind != "tensorstore":
      return None
    if source.name not in self._stores:
      folder = pathlib.Path(source.spec["kvstore"]["path"])
      metadata = t5x.check_zarr_folder(folder, source.name, source.recorded)
      self.checksums.start_folder(folder)  # Hashed while the data is read.
      # Defence in depth: a chunk lost after the check fails, not zeros.
      spec = {**source.spec, "fill_missing_data_reads":
              metadata.get("fill_value") is not None}
      store = ts.open(spec, open=True, read=True).result()
      t5x.check_array_shape(source.name, store.shape, source.recorded,
                            self.path)
      self._stores[source.name] = store
    return self._stores[source.name]

  def _read(self, source: ArraySource, index: Index) -> np.ndarray:
    self.read_counts[source.name] += 1
    array = _read_slice(source, self._handle(source), index)
    if tuple(array.shape) != _slice_shape(index):
      raise ValueError(
          f"Reading {index} of {source.key} in {self.description} gave shape "
          f"{list(array.shape)}, expected {list(_slice_shape(index))}.")
    return array

  def _equal(self, a: ArraySource, b: ArraySource) -> bool:
    """Whether two stored tensors are equal, compared in row blocks of at
    most `_COMPARE_BLOCK_BYTES` (one read of each block of each)."""
    if a.shape != b.shape:
      return False
    if not a.shape:
      return np.array_equal(self._read(a, ()), self._read(b, ()))
    row_bytes = max(1, a.dtype.itemsize * int(np.prod(a.shape[1:])))
    rows = max(1, _COMPARE_BLOCK_BYTES // row_bytes)
    rest = tuple(slice(0, d) for d in a.shape[1:])
    for start in range(0, a.shape[0], rows):
      index = (slice(start, min(start + rows, a.shape[0])),) + rest
      if not np.array_equal(self._read(a, index), self._read(b, index)):
        return False
    return True

  def read(self, name: str, sharding: jax.sharding.Sharding | None = None,
           dtype: Any = np.float32) -> jax.Array | np.ndarray:
    """Reads one parameter straight into `sharding`, or whole to the host.

    With a sharding, only this process's addressable shards are read: each
    distinct slice once, however many devices hold it.

    Args:
      name: our parameter name, e.g. 'encoder/layers_0/attention/query/kernel'.
      sharding: where the [*shape] global array goes, e.g. a `NamedSharding`;
        None reads the whole parameter (one read) into host memory.
      dtype: the result's dtype; None keeps the stored one.

    Returns:
      A global `jax.Array` of the parameter's shape with `sharding`, or
      (no sharding) a contiguous `np.ndarray` [*shape] in our orientation.

    Raises:
      KeyError: for a name the checkpoint does not have.
      integrity.DamagedCheckpointError: naming the file, for a missing
        chunk, a `.zarray` that disagrees with the msgpack file, or (a
        ChecksumMismatchError) a file that differs from the manifest.
    """
    source = self._source(name)
    folder = source.spec["kvstore"]["path"] if source.spec else None
    try:
      array = self._read_array(source, sharding, dtype)
    except Exception:
      if folder:  # A file that differs from the manifest explains it.
        self.checksums.wait(folder)
      raise
    if folder:  # Verified before it is returned.
      self.checksums.wait(folder)
    return array

  def _read_array(self, source: ArraySource,
                  sharding: jax.sharding.Sharding | None,
                  dtype: Any) -> jax.Array | np.ndarray:
    """`read`'s reads, the files' checksums not awaited."""
    dtype = source.dtype if dtype is None else np.dtype(dtype)
    if sharding is None:
      whole = tuple(slice(0, d) for d in source.shape)
      return np.ascontiguousarray(self._read(source, whole), dtype=dtype)
    indices = sharding.addressable_devices_indices_map(source.shape)
    devices_of: dict[tuple[tuple[int, int], ...], list[Any]] = {}
    for device, index in indices.items():
      norm = _normalize(index, source.shape)
      devices_of.setdefault(tuple((s.start, s.stop) for s in norm),
                            []).append(device)
    on_device = {}
    for key, devices in devices_of.items():
      index = tuple(slice(start, stop) for start, stop in key)
      host = np.ascontiguousarray(self._read(source, index), dtype=dtype)
      for device in devices:
        on_device[device] = jax.device_put(host, device)
      del host
    array = jax.make_array_from_single_device_arrays(
        source.shape, sharding, [on_device[d] for d in indices])
    # Transfers finish before the next parameter's slices are read.
    return array.block_until_ready()

  def read_all(self, shardings: Any = None, dtype: Any = np.float32
               ) -> Params:
    """Reads several parameters, each into its sharding (or to the host).

    Args:
      shardings: None (every parameter, to the host), one `Sharding` for
        every parameter, or {name: Sharding or None (host)} as a flat dict
        of '/'-joined names or a nested tree (e.g.
        `partitioning.param_shardings(...)`); only the parameters named are
        read, in its order.
      dtype: see `read`.

    Returns:
      Nested dict named as in `param_tree`: `jax.Array`s where a sharding
      was given, `np.ndarray`s where not.

    Raises:
      KeyError: naming every parameter of `shardings` the checkpoint lacks
        (before anything is read).
    """
    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
      flat = {name: shardings for name in self.sources}
    else:
      flat = param_tree.flatten_params(shardings)
    missing = [name for name in flat if name not in self.sources]
    if missing:
      raise KeyError(f"{self.description} has no parameters "
                     f"{', '.join(missing)}.")
    return param_tree.unflatten_params(
        {name: self.read(name, sharding, dtype)
         for name, sharding in flat.items()})

  def files(self) -> list[pathlib.Path]:
    """Every file a full read of this checkpoint uses: T5X's msgpack file
    and every file of its arrays' folders; Hugging Face's config.json,
    weights index and weights files."""
    if self.format == pretrained.CheckpointFormat.HUGGING_FACE:
      names = [hf.CONFIG_FILE, *([self.weights.index] if self.weights.index
                                 else []), *self.weights.files]
      return [self.path / n for n in names]
    files = [self.path / t5x.CHECKPOINT_FILE]
    for source in self.sources.values():
      if source.kind == "tensorstore":
        files += integrity.folder_files(source.spec["kvstore"]["path"])
    return files

  def content_fingerprint(self) -> str:
    """`integrity.fingerprint` over {file name: checksum} of `files()`: 12
    hex digits telling this checkpoint's content from another's of the same
    shapes. Files already read are not hashed again; the others are hashed
    (and verified against the manifest) now.

    Raises:
      integrity.ChecksumMismatchError: naming a file that differs from the
        checkpoint's manifest.
    """
    return self.checksums.fingerprint(self.files())

  def close(self) -> None:
    """Closes the Hugging Face weights files and zarr stores."""
    for handle in self._files.values():
      handle.__exit__(None, None, None)
    self._files.clear()
    self._stores.clear()
    self.checksums.close()

  def __enter__(self) -> "CheckpointRecord":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  def __repr__(self) -> str:
    return (f"CheckpointRecord({self.format.name}, {self.path}, "
            f"step={self.step}, {len(self.sources)} parameters)")


def read_params(path: str | os.PathLike[str],
                expected_shapes: Mapping[str, Any] | None = None, *,
                dtype: Any = np.float32, check_copies: bool = True) -> Params:
  """Reads a whole pre-trained checkpoint into host memory.

  `open_checkpoint`, `CheckpointRecord.check` and a host `read_all` in one
  call, for callers that want every parameter on the host (prediction,
  analyses, scripts, tests); the training state reads into shardings.

  Args:
    path: see `open_checkpoint`.
    expected_shapes: the model's parameter shapes (e.g.
      `EncoderDecoderModel.param_shapes()` or `param_tree.t5_param_shapes`);
      when given, names and shapes must match before anything is read.
    dtype: the arrays' dtype; None keeps the stored one.
    check_copies: see `open_checkpoint`.

  Returns:
    Nested dict of `np.ndarray`s named as in `param_tree`, in the order of
    `expected_shapes` when given, else the checkpoint's.

  Raises:
    As `open_checkpoint`, and `validation.ParamMismatchError` listing every
    missing, unexpected or mis-shaped parameter.
  """
  with open_checkpoint(path, check_copies=check_copies) as record:
    if expected_shapes is None:
      return record.read_all(None, dtype)
    names = param_tree.flatten_params(record.check(expected_shapes))
    return record.read_all(dict.fromkeys(names), dtype)


def open_checkpoint(path: str | os.PathLike[str], *,
                    check_copies: bool = True) -> CheckpointRecord:
  """Opens a T5X or Hugging Face checkpoint without reading array data.

  Args:
    path: see `pretrained.detect_checkpoint_format`: a Hugging Face model
      directory, a T5X `checkpoint_<step>` directory, its msgpack
      `checkpoint` file, or a T5X model directory (latest step).
    check_copies: Hugging Face only: compare separately stored embedding
      copies (and a tied `lm_head.weight`) with `shared.weight`; see the
      module docstring.

  Returns:
    The record. Hugging Face parameters are already checked against the
    checkpoint's own config.json.

  Raises:
    FileNotFoundError: for a missing path, weights file, shard or array
      folder.
    ValueError: for an unknown layout, a msgpack file that is not a T5X
      checkpoint, an unsupported config or differing embedding copies.
    validation.ParamMismatchError: when Hugging Face tensors do not match
      their config.
  """
  fmt = pretrained.detect_checkpoint_format(path)
  if fmt == pretrained.CheckpointFormat.HUGGING_FACE:
    return _open_hf(pathlib.Path(path), check_copies=check_copies)
  return _open_t5x(path)


def _open_t5x(path: str | os.PathLike[str]) -> CheckpointRecord:
  """Reads the msgpack file once; resolves (not opens) the zarr folders."""
  ckpt_dir = t5x.find_checkpoint_dir(path)
  checksums = integrity.FileChecksums(ckpt_dir)
  tree = t5x.read_checkpoint_tree(ckpt_dir, checksums)
  inline, specs = t5x.split_tree(tree["optimizer"]["target"])
  sources = {}
  for name, value in inline.items():
    array = np.asarray(value)
    sources[name] = ArraySource(name, "inline", name, tuple(array.shape),
                                array.dtype, inline=array)
  for name, spec in specs.items():
    local = t5x.local_tensorstore_spec(spec, ckpt_dir, name)
    metadata = spec.get("metadata", {})
    shape, dtype = metadata.get("shape"), metadata.get("dtype")
    if shape is None or dtype is None:  # Reads the zarr metadata only.
      store = ts.open(local, open=True, read=True).result()
      shape, dtype = store.shape, store.dtype.numpy_dtype
    else:
      dtype = t5x.zarr_dtype(dtype)
    sources[name] = ArraySource(name, "tensorstore", name,
                                tuple(int(d) for d in shape), dtype,
                                spec=local, recorded=spec)
  version = tree.get("version")
  return CheckpointRecord(
      fmt=pretrained.CheckpointFormat.T5X, path=ckpt_dir, sources=sources,
      step=t5x.tree_step(tree),
      version=None if version is None else int(version), checksums=checksums)


def _open_hf(model_dir: pathlib.Path, *,
             check_copies: bool) -> CheckpointRecord:
  """Reads config.json and the weights' headers; maps names to ours."""
  model_dir = model_dir.resolve()
  checksums = integrity.FileChecksums(model_dir)
  hf_config = hf.read_hf_config(model_dir)
  checksums.check(model_dir / hf.CONFIG_FILE)
  config = hf.hf_config_to_t5_config(hf_config)
  files = {}
  tensors: dict[str, ArraySource] = {}  # By Hugging Face name.
  weights = hf_formats.find_weight_files(model_dir)
  if weights.index:
    checksums.check(model_dir / weights.index)
  try:
    for shard, names in weights.files.items():
      handle = hf_formats.open_weight_file(model_dir / shard, weights.format)
      files[shard] = handle
      available = set(handle.keys())
      for name in sorted(available) if names is None else names:
        if name not in available:
          raise FileNotFoundError(
              f"Tensor {name} is listed in {weights.index} but "
              f"missing from shard {model_dir / shard}.")
        tensor = handle.get_slice(name)
        kind = tensor.get_dtype()
        if kind not in hf_formats.SAFETENSORS_DTYPES:
          raise ValueError(f"Tensor {name} in {model_dir / shard} has dtype "
                           f"{kind}, which we cannot read.")
        tensors[name] = ArraySource(
            name, weights.format, name, tuple(tensor.get_shape()),
            hf_formats.SAFETENSORS_DTYPES[kind], file=shard)
    record = CheckpointRecord(
        fmt=pretrained.CheckpointFormat.HUGGING_FACE, path=model_dir,
        sources=hf.tensors_to_params(tensors, config,
                                     hf.head_tied_to_embedding(hf_config)),
        config=config, hf_config=hf_config, files=files, weights=weights,
        checksums=checksums)
  except BaseException:
    for handle in files.values():
      handle.__exit__(None, None, None)
    raise
  try:
    if check_copies:
      _check_hf_copies(record, tensors, config)
    hf.check_against_own_config(record.shapes, config, model_dir)
  except BaseException:
    record.close()
    raise
  return record


def _check_hf_copies(record: CheckpointRecord,
                     tensors: Mapping[str, ArraySource],
                     config: config_lib.T5Config) -> None:
  """Raises for embedding copies (or a scaled tied head) that differ."""
  # pylint: disable=protected-access
  source = record.description
  embeddings = [n for n in hf.EMBEDDING_NAMES if n in tensors]
  for name in embeddings[1:]:
    if not record._equal(tensors[embeddings[0]], tensors[name]):
      raise hf.embedding_copy_error(source, name)
  if (config.logits_via_embedding and hf.LM_HEAD in tensors and embeddings
      and not record._equal(tensors[hf.LM_HEAD],
                            tensors[embeddings[0]])):
    raise hf.scaled_untied_head_error(source)
