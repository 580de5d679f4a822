"""A SeqIO data source over local text files: `{"text": tf.string}` examples.

Each file is named by a spec string:

* `path.txt`: one text per non-empty line;
* `path.jsonl:key`: the value of `key` in each JSON line. A dotted key
  reaches into nested objects (`train.jsonl:passage.text`); a list met on
  the way, or as the value, yields each of its elements
  (`train.jsonl:passage.questions.question`);
* `path.tsv:column`: the column a header row names (tab-separated, read with
  `csv` and `csv.QUOTE_NONE`, so quotes are kept as text); `path.txt:column`
  reads a `.txt` file the same way (the MSR paraphrase corpus,
  `msr_paraphrase_train.txt:#1 String`, is tab-separated with a header).

Texts that are empty or only (ASCII) whitespace are skipped in every format;
texts are kept as they are otherwise (a `.txt` line without its line end).
Order is
deterministic: files in the order given, texts in file order. The source does
not shuffle (its `shuffle` argument is accepted and ignored, like a one-shard
file source); a task over it shuffles examples after preprocessing, as SeqIO
tasks do with their shuffle buffer.

Errors come in two stages, both before any training step:

* building the source (`text_files_source`): a malformed spec, an unknown
  extension, a jsonl/tsv spec without a field, a missing file (named), a tsv
  column its header lacks (the header's columns listed), a jsonl key absent
  from the file's first line;
* `TextFilesSource.check(split)` (run by the pre-flight checks in
  `prompt_tuning.data.availability` and by `num_input_examples`): a full pass over
  the files, naming the file and line of any JSON line that lacks the key,
  is not valid JSON, or holds something other than text there, and of any
  tsv row with too few fields.
"""

import csv
import dataclasses
import json
import os
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning import errors

# Comma-separated file specs of the pretraining text-file tasks
# (`prompt_tuning.tasks.pretraining`).
TEXT_FILES_ENV = "PROMPT_TUNING_TEXT_FILES"
TEXT = "text"
TXT, JSONL, TSV = ".txt", ".jsonl", ".tsv"
EXTENSIONS = (TXT, JSONL, TSV)
_EXAMPLE = ("e.g. 'corpus.txt', 'train.jsonl:passage.text' or "
            "'train.tsv:sentence'")
# Fields of a tsv row may be long (a passage); csv's default cap is 128 KiB.
_FIELD_SIZE_LIMIT = 1 << 30
_ASCII_WHITESPACE = " \t\n\r\f\v"
_NO_AUTOGRAPH = tf.autograph.experimental.do_not_convert  # Plain TF ops.


def parse_spec(spec: str) -> tuple[str, Optional[str]]:
  """Splits a file spec into (path, field) and checks the file exists.

  Args:
    spec: `path.txt`, `path.jsonl:key` or `path.tsv:column` (see the module
      doc). The field follows the last `:` after the extension, so paths may
      hold colons.

  Returns:
    `(path, None)` for a `.txt` read by lines, `(path, key or column)`
    otherwise.

  Raises:
    errors.ConfigError: not a string, an unknown extension, a jsonl/tsv spec
      without a field.
    FileNotFoundError: the file does not exist (named).
  """
  if not isinstance(spec, str) or not spec.strip():
    raise errors.ConfigError(
        f"A text file spec must be a non-empty string, got {spec!r}; "
        f"{_EXAMPLE}.")
  spec = spec.strip()
  path, field = spec, None
  head, sep, tail = spec.rpartition(":")
  if sep and head.endswith(EXTENSIONS):
    path, field = head, tail
  extension = os.path.splitext(path)[1]
  if extension not in EXTENSIONS:
    raise errors.ConfigError(
        f"Text file spec {spec!r}: unknown extension {extension or '(none)'!r}"
        f"; use {', '.join(EXTENSIONS)} ({_EXAMPLE}).")
  if extension != TXT and not field:
    what = "key" if extension == JSONL else "column"
    raise errors.ConfigError(
        f"Text file spec {spec!r}: a {extension} file needs the {what} to "
        f"read, as '{path}:{what.upper()}' ({_EXAMPLE}).")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Text file {path} (from spec {spec!r}) does not "
                            "exist.")
  return path, field


def _is_blank(text: str) -> bool:
  """Only ASCII whitespace (what `tf.strings.strip` removes), or empty."""
  return not text.strip(_ASCII_WHITESPACE)


def _values(node: Any, keys: Sequence[str]) -> Iterator[Any]:
  """The values at the dotted `keys` below `node`, lists flattened.

  Raises:
    KeyError: with the first missing key (or a non-object met) as its arg.
  """
  if isinstance(node, list):
    for element in node:
      yield from _values(element, keys)
    return
  if not keys:
    yield node
    return
  if not isinstance(node, dict) or keys[0] not in node:
    raise KeyError(keys[0])
  yield from _values(node[keys[0]], keys[1:])


@dataclasses.dataclass(frozen=True)
class TextFile:
  """One parsed spec.

  Attributes:
    spec: as given.
    path: the file.
    field: the jsonl key (dotted) or tsv column; None for `.txt`.
  """
  spec: str
  path: str
  field: Optional[str]

  @classmethod
  def from_spec(cls, spec: str) -> "TextFile":
    path, field = parse_spec(spec)
    return cls(spec=spec.strip(), path=path, field=field)

  @property
  def extension(self) -> str:
    return os.path.splitext(self.path)[1]

  @property
  def by_lines(self) -> bool:
    """A `.txt` without a column: one text per line."""
    return self.extension == TXT and self.field is None

  @property
  def tabular(self) -> bool:
    """A `.tsv`, or a `.txt` with a column: tab-separated with a header."""
    return self.extension == TSV or (self.extension == TXT and
                                     self.field is not None)

  def check_header(self) -> None:
    """Cheap checks: a tsv header names the column; a jsonl first line has
    the key. Reads one line."""
    if self.tabular:
      self._tsv_column()
    elif self.extension == JSONL:
      with open(self.path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
          if line.strip():
            list(self._json_texts(line, number))
            return

  def _tsv_column(self) -> int:
    with open(self.path, encoding="utf-8", newline="") as f:
      header = next(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE),
                    None)
    if not header:
      raise errors.ConfigError(f"{self.path} is empty: a .tsv file needs a "
                               f"header row naming column {self.field!r}.")
    if self.field not in header:
      raise errors.ConfigError(
          f"{self.path} has no column {self.field!r}; its header has "
          f"{header}. Fix the spec {self.spec!r}.")
    return header.index(self.field)

  def _json_texts(self, line: str, number: int) -> Iterator[str]:
    where = f"{self.path}:{number}"
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise errors.ConfigError(f"{where} is not valid JSON ({e}).") from e
    try:
      values = list(_values(record, self.field.split(".")))
    except KeyError as e:
      keys = sorted(record) if isinstance(record, dict) else type(
          record).__name__
      raise errors.ConfigError(
          f"{where} has no key {self.field!r} (missing {e.args[0]!r}); the "
          f"line's top-level keys are {keys}. Fix the spec {self.spec!r}."
      ) from None
    for value in values:
      if not isinstance(value, str):
        raise errors.ConfigError(
            f"{where}: {self.field!r} holds {type(value).__name__} "
            f"{str(value)[:60]!r}, not text; name a key whose values are "
            f"strings (spec {self.spec!r}).")
      yield value

  def texts(self) -> Iterator[str]:
    """The file's texts in order, blank ones skipped; raises as documented."""
    try:
      yield from self._texts()
    except UnicodeDecodeError as e:
      raise errors.ConfigError(f"{self.path} is not UTF-8 text ({e}).") from e

  def _texts(self) -> Iterator[str]:
    if self.by_lines:
      with open(self.path, encoding="utf-8") as f:
        for line in f:
          if not _is_blank(line):
            yield line.rstrip("\r\n")
    elif self.extension == JSONL:
      with open(self.path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
          if line.strip():
            yield from (t for t in self._json_texts(line, number)
                        if not _is_blank(t))
    else:
      column = self._tsv_column()
      csv.field_size_limit(max(csv.field_size_limit(), _FIELD_SIZE_LIMIT))
      with open(self.path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        for row in rows:
          if not row:
            continue
          if column >= len(row):
            raise errors.ConfigError(
                f"{self.path}:{rows.line_num} has {len(row)} fields; column "
                f"{self.field!r} is field {column + 1} of the header.")
          if not _is_blank(row[column]):
            yield row[column]

  def stamp(self) -> tuple[int, int]:
    """(size, modification time) to tell when a cached count is stale."""
    stat = os.stat(self.path)
    return stat.st_size, stat.st_mtime_ns


class TextFilesSource(seqio.DataSource):
  """Texts of local files per split, as `{"text": tf.string}` examples.

  Sharding is by example (text `i` goes to shard `i % num_shards`).
  `check` (and `num_input_examples`) reads every file in Python; datasets
  are read by TensorFlow.
  """

  def __init__(self, split_files: Mapping[str, Sequence[TextFile]]):
    """Initialises the source from parsed files; reads nothing."""
    self._files = {split: tuple(files) for split, files in split_files.items()}
    self._counts: dict[str, tuple[tuple, int]] = {}
    super().__init__(splits=tuple(self._files))

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def files(self, split: str) -> tuple[TextFile, ...]:
    """The files of `split`, in reading order."""
    self._check_split(split)
    return self._files[split]

  def list_shards(self, split: str) -> Sequence[str]:
    return [f.path for f in self.files(split)]

  def __repr__(self) -> str:
    shown = {s: [f.spec for f in files] for s, files in self._files.items()}
    return f"{type(self).__name__}({shown})"

  def _check_split(self, split: str) -> None:
    if split not in self._files:
      raise ValueError(f"This text-file source has no split {split!r}; it "
                       f"has {sorted(self._files)}.")

  def _texts(self, split: str) -> Iterator[str]:
    for text_file in self.files(split):
      yield from text_file.texts()

  def check(self, split: str) -> int:
    """Reads every file of `split` once; returns its number of texts.

    The count is kept until a file's size or modification time changes.

    Raises:
      errors.ConfigError: a bad line, naming file and line (module doc).
      FileNotFoundError: a file has gone.
    """
    files = self.files(split)
    for text_file in files:
      if not os.path.isfile(text_file.path):
        raise FileNotFoundError(f"Text file {text_file.path} (from spec "
                                f"{text_file.spec!r}) does not exist.")
    stamps = tuple(f.stamp() for f in files)
    cached = self._counts.get(split)
    if cached is None or cached[0] != stamps:
      self._counts[split] = (stamps, sum(1 for _ in self._texts(split)))
    return self._counts[split][1]

  def num_input_examples(self, split: str) -> int:
    """Texts in `split` (reads the files once, see `check`)."""
    return self.check(split)

  def get_dataset(
      self,
      split: str = "train",
      shuffle: bool = True,  # Ignored: texts come in file order.
      seed: Optional[int] = None,  # Unused.
      shard_info: Optional[seqio.ShardInfo] = None,
      *,
      sequence_length: Optional[Mapping[str, int]] = None,  # Unused.
      use_cached: bool = False,  # Unused.
      num_epochs: Optional[int] = 1,  # Unused.
  ) -> tf.data.Dataset:
    """`{"text": scalar tf.string}` examples of `split`, in file order.

    `.txt` files are streamed (`tf.data.TextLineDataset`); jsonl and tsv
    files are parsed into memory here, when the dataset is built.
    """
    del shuffle, seed, sequence_length, use_cached, num_epochs
    dataset = None
    for text_file in self.files(split):
      if text_file.by_lines:
        lines = tf.data.TextLineDataset(text_file.path).filter(_NO_AUTOGRAPH(
            lambda line: tf.strings.length(tf.strings.strip(line)) > 0))
      else:
        lines = tf.data.Dataset.from_tensor_slices(tf.constant(
            np.asarray(list(text_file.texts()), dtype=object).reshape([-1]),
            dtype=tf.string))
      dataset = lines if dataset is None else dataset.concatenate(lines)
    if shard_info and shard_info.num_shards > 1:
      dataset = dataset.shard(shard_info.num_shards, shard_info.index)
    return dataset.map(_NO_AUTOGRAPH(lambda text: {TEXT: text}))


def _parse_all(specs: Sequence[str], what: str) -> list[TextFile]:
  if isinstance(specs, str):
    raise errors.ConfigError(
        f"{what} must be a sequence of file specs, got the string {specs!r}; "
        f"write [{specs!r}].")
  files = [TextFile.from_spec(spec) for spec in specs]
  for text_file in files:
    text_file.check_header()
  return files


def text_files_source(specs: Sequence[str],
                      validation_specs: Sequence[str] = ()
                      ) -> seqio.DataSource:
  """A source with split `train` (and `validation` if `validation_specs`).

  Args:
    specs: the training files, see the module doc for the spec format.
    validation_specs: files of a `validation` split; none by default.

  Returns:
    A `TextFilesSource` of `{"text": tf.string}` examples.

  Raises:
    errors.ConfigError / FileNotFoundError: for the problems listed in the
      module doc's first stage.
  """
  split_files = {"train": _parse_all(specs, "specs")}
  if not split_files["train"]:
    raise errors.ConfigError(f"text_files_source needs at least one training "
                             f"file spec; {_EXAMPLE}.")
  if validation_specs:
    split_files["validation"] = _parse_all(validation_specs,
                                           "validation_specs")
  return TextFilesSource(split_files)
