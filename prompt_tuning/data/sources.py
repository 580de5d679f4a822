"""A SeqIO data source that reads TFDS, or local files when configured.

`TfdsOrLocalSource` decides at every read, not at construction, whether a
local directory is configured (see `prompt_tuning.data.locations`). With one,
it parses the files with a reader that yields TFDS's exact features; without,
it calls `tfds.load`, which downloads and prepares the dataset on first use.
"""

import dataclasses
from typing import Callable, Mapping, Optional, Protocol, Sequence, Union

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from prompt_tuning.data import locations


class LocalReader(Protocol):
  """Reads one dataset's split from a local directory into TFDS features."""

  @property
  def element_spec(self) -> Mapping[str, object]:
    ...

  def files(self, root: str, split: str) -> list[str]:
    """The files `split` is read from; raises FileNotFoundError if absent."""
    ...

  def read(self, root: str, split: str) -> list[dict]:
    ...


@dataclasses.dataclass(frozen=True)
class LocalFiles:
  """A local alternative to TFDS: which directory setting, which reader.

  Attributes:
    directory: returns the configured directory, or None to use TFDS.
    reader: parses a split under that directory.
  """
  directory: Callable[[], Optional[str]]
  reader: LocalReader


def _flatten_like(spec: Mapping[str, object], example: Mapping[str, object]
                  ) -> list[object]:
  """`example`'s values in `tf.nest.flatten(spec)` order, keys checked."""
  if set(example) != set(spec):
    raise ValueError(f"Example keys {sorted(example)} differ from the "
                     f"element spec's {sorted(spec)}.")
  values = []
  for key in sorted(spec):
    if isinstance(spec[key], Mapping):
      values.extend(_flatten_like(spec[key], example[key]))
    else:
      values.append(example[key])
  return values


def examples_dataset(examples: Sequence[Mapping[str, object]],
                     element_spec: Mapping[str, object]) -> tf.data.Dataset:
  """A `tf.data.Dataset` of in-memory examples with the given element spec.

  Examples whose features are all scalars are sliced from columns (fast: no
  Python call per element); others, e.g. ReCoRD's variable-length entity
  lists, go through a generator.
  """
  specs = tf.nest.flatten(element_spec)
  if examples and all(s.shape.rank == 0 for s in specs):
    rows = [_flatten_like(element_spec, e) for e in examples]
    columns = [
        np.asarray([row[i] for row in rows],
                   dtype=object if spec.dtype == tf.string
                   else spec.dtype.as_numpy_dtype)
        for i, spec in enumerate(specs)
    ]
    tensors = [tf.constant(c, dtype=spec.dtype)
               for c, spec in zip(columns, specs)]
    return tf.data.Dataset.from_tensor_slices(
        tf.nest.pack_sequence_as(element_spec, tensors))

  def generate():
    yield from examples

  return tf.data.Dataset.from_generator(generate,
                                        output_signature=element_spec)


class TfdsOrLocalSource(seqio.DataSource):
  """Reads a TFDS dataset, or the same examples from local files.

  Both paths return the same features, so the preprocessors downstream are
  shared. Sharding is at the example level in both cases.
  """

  def __init__(
      self,
      tfds_name: str,
      splits: Union[Sequence[str], Mapping[str, str]],
      local: Optional[LocalFiles] = None,
      tfds_data_dir: Callable[[], Optional[str]] = locations.tfds_data_dir,
      split_transforms: Optional[Mapping[str, Callable[[tf.data.Dataset],
                                                        tf.data.Dataset]]]
      = None,
  ):
    """Initialises the source; reads nothing.

    Args:
      tfds_name: e.g. `super_glue/boolq:1.0.2`.
      splits: the task's split names, or a mapping from them to TFDS split
        names (e.g. `{"validation": "test"}`). Local readers get the task's
        split name.
      local: the local alternative, or None for TFDS only.
      tfds_data_dir: returns the TFDS data directory (None: TFDS default).
      split_transforms: per task split, a function applied to the examples
        read (from TFDS or local files alike) before they reach the
        preprocessors, e.g. ReCoRD's one-row-per-answer training rows.
        Counts (`num_input_examples`) are of the transformed examples.
    """
    if not isinstance(splits, Mapping):
      splits = {s: s for s in splits}
    self._tfds_name = tfds_name
    self._split_map = dict(splits)
    self._local = local
    self._tfds_data_dir = tfds_data_dir
    self._split_transforms = dict(split_transforms or {})
    unknown = set(self._split_transforms) - set(self._split_map)
    if unknown:
      raise ValueError(f"split_transforms for unknown splits {sorted(unknown)}"
                       f"; {tfds_name} has {sorted(self._split_map)}.")
    self._count_cache: dict[tuple[str, str], int] = {}
    super().__init__(splits=tuple(self._split_map))

  @property
  def tfds_name(self) -> str:
    return self._tfds_name

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  @property
  def local(self) -> Optional[LocalFiles]:
    """The local alternative to TFDS, or None if there is none."""
    return self._local

  def raw_element_spec(self) -> Optional[Mapping[str, tf.TensorSpec]]:
    """The features of one raw example, known without reading any data: the
    local reader's, else those the TFDS builder's code declares. None when
    TFDS cannot construct the builder here, or when a feature is neither a
    scalar nor a flat list (e.g. MRQA's ragged spans)."""
    if self._local is not None:
      return dict(self._local.reader.element_spec)
    try:
      builder = tfds.builder(self._tfds_name, data_dir=self._tfds_data_dir())
      spec = dict(builder.info.features.get_tensor_spec())
    except (ValueError, FileNotFoundError, AssertionError):
      return None  # Unknown dataset or version (DatasetNotFoundError too).
    flat = tf.nest.flatten(spec)
    if all(isinstance(s, tf.TensorSpec) and s.shape.rank <= 1 for s in flat):
      return spec
    return None

  def local_dir(self) -> Optional[str]:
    """The configured local directory, or None when reading TFDS."""
    return self._local.directory() if self._local else None

  def tfds_split(self, split: str) -> str:
    """The TFDS split that serves the task's `split`."""
    self._check_split(split)
    return self._split_map[split]

  def tfds_data_dir(self) -> Optional[str]:
    """The TFDS data directory in effect (None: TFDS's own default)."""
    return self._tfds_data_dir()

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(tfds_name={self._tfds_name!r}, "
            f"splits={self.splits}, local={self._local is not None})")

  def _check_split(self, split: str) -> None:
    if split not in self._split_map:
      raise ValueError(f"{self._tfds_name} has no split {split!r}; it has "
                       f"{sorted(self._split_map)}.")

  def get_dataset(
      self,
      split: str = tfds.Split.TRAIN,
      shuffle: bool = True,
      seed: Optional[int] = None,
      shard_info: Optional[seqio.ShardInfo] = None,
      *,
      sequence_length: Optional[Mapping[str, int]] = None,  # Unused.
      use_cached: bool = False,  # Unused.
      num_epochs: Optional[int] = 1,  # Unused.
  ) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs
    self._check_split(split)
    root = self.local_dir()
    if root:
      dataset = self._local_dataset(root, split, shuffle, seed, shard_info)
    else:
      dataset = self._tfds_dataset(split, shuffle, seed, shard_info)
    if split in self._split_transforms:
      dataset = self._split_transforms[split](dataset)
    return dataset

  def _local_dataset(self, root, split, shuffle, seed, shard_info):
    examples = self._local.reader.read(root, split)
    if split not in self._split_transforms:
      self._count_cache[(root, split)] = len(examples)
    if shard_info and shard_info.num_shards > 1:
      examples = examples[shard_info.index::shard_info.num_shards]
    if shuffle:
      order = np.random.default_rng(seed).permutation(len(examples))
      examples = [examples[i] for i in order]

    return examples_dataset(examples, self._local.reader.element_spec)

  def _tfds_dataset(self, split, shuffle, seed, shard_info):
    tfds_split = self._split_map[split]
    if shard_info and shard_info.num_shards > 1:
      tfds_split = tfds.even_splits(
          tfds_split, n=shard_info.num_shards)[shard_info.index]
    return tfds.load(
        self._tfds_name,
        split=tfds_split,
        data_dir=self._tfds_data_dir(),
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )

  def num_input_examples(self, split: str) -> Optional[int]:
    """Examples in `split` (after MultiRC/ReCoRD expansion), None if unknown.

    Local files are parsed once per directory to count; TFDS answers from the
    prepared dataset's metadata and returns None if it is not prepared. A
    split with a `split_transforms` entry is counted by reading it through
    the transform once (per directory).
    """
    self._check_split(split)
    root = self.local_dir()
    if split in self._split_transforms:
      return self._transformed_count(root, split)
    if root:
      key = (root, split)
      if key not in self._count_cache:
        self._count_cache[key] = len(self._local.reader.read(root, split))
      return self._count_cache[key]
    builder = tfds.builder(self._tfds_name, data_dir=self._tfds_data_dir())
    splits = builder.info.splits
    tfds_split = self._split_map[split]
    if tfds_split not in splits:
      return None
    return splits[tfds_split].num_examples or None

  def _transformed_count(self, root: Optional[str],
                         split: str) -> Optional[int]:
    """Examples of a split with a transform, read through it once."""
    key = (root or f"tfds:{self._tfds_data_dir()}", split)
    if key not in self._count_cache:
      if root is None:
        builder = tfds.builder(self._tfds_name,
                               data_dir=self._tfds_data_dir())
        if self._split_map[split] not in builder.info.splits:
          return None
      dataset = self.get_dataset(split, shuffle=False)
      self._count_cache[key] = int(dataset.reduce(
          tf.constant(0, tf.int64), lambda count, _: count + 1))
    return self._count_cache[key]
