"""Reads MRPC from the original Microsoft Research Paraphrase Corpus files.

GLUE's MRPC is built from `msr_paraphrase_train.txt` (4,076 pairs) and
`msr_paraphrase_test.txt` (1,725 pairs): tab-separated, a header line
`Quality #1 ID #2 ID #1 String #2 String`, Quality 1 for a paraphrase. GLUE's
test split is the test file; GLUE's train (3,668) and validation (408) splits
partition the train file by the id pairs listed in `dev_ids.tsv`.

Examples have TFDS `glue/mrpc`'s features: `sentence1`, `sentence2`, `label`
(0 `not_equivalent`, 1 `equivalent`) and `idx` (the row's position in its
file, as TFDS numbers them). Two deliberate differences from TFDS: the test
split keeps its real labels (TFDS blanks them to -1), and without
`dev_ids.tsv` the train split is the whole train file and there is no
validation split.

Some copies of the MSR files (the project's shared one among them) write
each double quote as the token `<QUOTE>` and start with a (double-encoded)
byte-order mark; `<QUOTE>` is mapped back to `"` and the header line, BOM
included, is skipped, so both give the release's sentences.
"""

import dataclasses
import os

import tensorflow as tf

from prompt_tuning.data import locations

TRAIN_FILE = "msr_paraphrase_train.txt"
TEST_FILE = "msr_paraphrase_test.txt"
DEV_IDS_FILE = "dev_ids.tsv"
FOLDER = "MRPC"
CLASS_NAMES = ("not_equivalent", "equivalent")
QUOTE_TOKEN = "<QUOTE>"
_NUM_COLUMNS = 5


def _sentence(text: str) -> str:
  """A sentence as the MSR release writes it (`<QUOTE>` -> `"`)."""
  return text.replace(QUOTE_TOKEN, '"')


def _rows(path: str) -> list[list[str]]:
  """The data rows of an MSR file (header dropped), checked for shape."""
  with tf.io.gfile.GFile(path, "rb") as f:
    lines = f.read().decode("utf-8").splitlines()
  rows = []
  for number, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) != _NUM_COLUMNS:
      raise ValueError(f"{path}:{number} has {len(fields)} tab-separated "
                       f"fields; expected {_NUM_COLUMNS}.")
    rows.append(fields)
  return rows


def _dev_id_pairs(path: str) -> set[tuple[str, str]]:
  with tf.io.gfile.GFile(path, "r") as f:
    return {tuple(line.rstrip("\r\n").split("\t")[:2])
            for line in f if line.strip()}


_LAYOUT = (f"Expected GLUE's layout: {FOLDER}/{TRAIN_FILE}, "
           f"{FOLDER}/{TEST_FILE} and, for the validation split, "
           f"{FOLDER}/{DEV_IDS_FILE}.")


def _require(path: str, what: str) -> str:
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"MRPC {what} {path} is missing (selected by "
        f"{locations.setting_of(locations.glue_dir).hint()}). "
        f"{_LAYOUT} Unset both to read TFDS glue/mrpc instead.")
  return path


def _require_dev_ids(path: str) -> str:
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"MRPC's validation split needs GLUE's id list {path}, which is "
        "missing; without it the train file is all train. " + _LAYOUT)
  return path


def _check_split(split: str) -> None:
  if split not in ("train", "validation", "test"):
    raise ValueError(f"Unknown MRPC split {split!r}; expected train, "
                     "validation or test.")


@dataclasses.dataclass(frozen=True)
class MrpcFiles:
  """Local reader of MRPC for `sources.TfdsOrLocalSource`."""

  @property
  def element_spec(self) -> dict:
    return {
        "sentence1": tf.TensorSpec(shape=(), dtype=tf.string),
        "sentence2": tf.TensorSpec(shape=(), dtype=tf.string),
        "label": tf.TensorSpec(shape=(), dtype=tf.int64),
        "idx": tf.TensorSpec(shape=(), dtype=tf.int32),
    }

  def files(self, root: str, split: str) -> list[str]:
    """The files `split` is read from, checked to exist; parses nothing.

    Raises:
      FileNotFoundError: naming the missing file and the expected layout.
    """
    _check_split(split)
    folder = _require(os.path.join(root, FOLDER), "folder")
    if split == "test":
      return [_require(os.path.join(folder, TEST_FILE), "file")]
    paths = [_require(os.path.join(folder, TRAIN_FILE), "file")]
    dev_ids_path = os.path.join(folder, DEV_IDS_FILE)
    if split == "validation":
      paths.append(_require_dev_ids(dev_ids_path))
    elif tf.io.gfile.exists(dev_ids_path):
      paths.append(dev_ids_path)
    return paths

  def read(self, root: str, split: str) -> list[dict]:
    """Returns the examples of `split` (`train`, `validation` or `test`)."""
    _check_split(split)
    folder = _require(os.path.join(root, FOLDER), "folder")
    if split == "test":
      rows = list(enumerate(_rows(_require(os.path.join(folder, TEST_FILE),
                                           "file"))))
    else:
      train_rows = _rows(_require(os.path.join(folder, TRAIN_FILE), "file"))
      dev_ids_path = os.path.join(folder, DEV_IDS_FILE)
      if tf.io.gfile.exists(dev_ids_path):
        dev_pairs = _dev_id_pairs(dev_ids_path)
        want_dev = split == "validation"
        rows = [(i, r) for i, r in enumerate(train_rows)
                if ((r[1], r[2]) in dev_pairs) == want_dev]
      elif split == "validation":
        _require_dev_ids(dev_ids_path)
      else:
        rows = list(enumerate(train_rows))
    return [{
        "sentence1": _sentence(fields[3]),
        "sentence2": _sentence(fields[4]),
        "label": int(fields[0]),
        "idx": index,
    } for index, fields in rows]
