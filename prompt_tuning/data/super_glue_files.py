"""Reads SuperGLUE from the official release files into TFDS's features.

The official release is one folder per task of jsonl files (`BoolQ/train.jsonl`,
`BoolQ/val.jsonl`, `BoolQ/test.jsonl`, ..., `AX-b/AX-b.jsonl`), with the
release's own field names (MultiRC's nested passage/questions/answers,
ReCoRD's passage/entities/qas, WSC's `target` spans). Each row is converted to
the dictionary TFDS `super_glue/<config>:1.0.2` yields for it, with the same
keys, dtypes, label ids and expansion (one example per MultiRC answer, one per
ReCoRD query), so that both sources feed the same preprocessors.
"""

import dataclasses
import json
import os
from typing import Any, Iterator

import tensorflow as tf

from prompt_tuning.data import locations
from prompt_tuning.data import super_glue_schema as schema

SPLIT_FILES = {
    "train": "train.jsonl",
    "validation": "val.jsonl",
    "test": "test.jsonl",
}

_SETTING = locations.setting_of(locations.super_glue_dir)
_SELECTED_BY = f"{_SETTING.env_var} or the gin binding {_SETTING.gin_binding}"
_STANDARD_FOLDERS = [folder for config, folder in schema.RELEASE_FOLDERS.items()
                     if config not in schema.DIAGNOSTIC_CONFIGS]
_DIAGNOSTIC_FILES = [f"{schema.RELEASE_FOLDERS[c]}/{schema.RELEASE_FOLDERS[c]}"
                     ".jsonl" for c in schema.DIAGNOSTIC_CONFIGS]
_LAYOUT = ("Expected the official release layout: <Task>/train.jsonl, "
           "<Task>/val.jsonl, <Task>/test.jsonl for "
           f"{', '.join(_STANDARD_FOLDERS)}, plus "
           f"{' and '.join(_DIAGNOSTIC_FILES)}.")
_HOW_TO_GET = ("Add the file from the official SuperGLUE release "
               "(https://super.gluebenchmark.com/tasks), point "
               f"{_SELECTED_BY} at a directory that has it, or read TFDS "
               f"super_glue instead by unsetting {_SETTING.env_var} "
               "(and the gin binding).")


def split_file(root: str, config: str, split: str) -> str:
  """Returns the jsonl file of `config`/`split` under `root`, checked to exist.

  Args:
    root: the local SuperGLUE directory.
    config: a TFDS super_glue config name, e.g. `boolq` or `wsc.fixed`.
    split: `train`, `validation` or `test` (only `test` for AX-b/AX-g).

  Raises:
    FileNotFoundError: naming the expected path when the directory, the task
      folder or the split file is missing.
    ValueError: for an unknown config or split.
  """
  if config not in schema.RELEASE_FOLDERS:
    raise ValueError(f"Unknown super_glue config {config!r}.")
  folder = schema.RELEASE_FOLDERS[config]
  if config in schema.DIAGNOSTIC_CONFIGS:
    if split != "test":
      raise ValueError(f"SuperGLUE {folder} only has a test split; got "
                       f"{split!r}.")
    filename = f"{folder}.jsonl"
  elif split in SPLIT_FILES:
    filename = SPLIT_FILES[split]
  else:
    raise ValueError(f"Unknown split {split!r}; expected one of "
                     f"{sorted(SPLIT_FILES)}.")
  if not tf.io.gfile.isdir(root):
    raise FileNotFoundError(
        f"Local SuperGLUE directory {root} does not exist (it was selected by "
        f"{_SELECTED_BY}). {_LAYOUT} {_HOW_TO_GET}")
  task_dir = os.path.join(root, folder)
  if not tf.io.gfile.isdir(task_dir):
    raise FileNotFoundError(
        f"SuperGLUE task folder {task_dir} is missing, so the {split!r} split "
        f"of {folder} ({folder}/{filename}) is not in the local directory "
        f"{root}. {_LAYOUT} {_HOW_TO_GET}")
  path = os.path.join(task_dir, filename)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"SuperGLUE file {path} is missing: the {split!r} split of {folder} "
        f"({folder}/{filename}) is not in the local directory {root}. "
        f"{_LAYOUT} {_HOW_TO_GET}")
  return path


def _label_id(config: str, value: Any) -> int:
  """Maps a release label (bool, int or class name) to TFDS's class id."""
  if value is None:
    return schema.NO_LABEL
  names = schema.CLASS_NAMES[config]
  if isinstance(value, bool):
    return names.index(str(value))
  if isinstance(value, int):
    if value not in (0, 1):
      raise ValueError(f"Unexpected {config} label {value!r}.")
    return value
  return names.index(value)


def _repaired_span(text: str, span: str, index: int) -> str:
  """A WSC span text made a substring of `text`, as in TFDS `wsc.fixed`.

  The release has a few spans that are not literally in the sentence (a
  capitalised `The` for a mid-sentence `the`, a trailing full stop, a line
  break). The fix matches the case of the first letter to the word at the
  span's index and drops those artefacts; a span that still does not occur is
  kept as released.
  """
  if span in text:
    return span
  words = text.split()
  first_word = words[index] if 0 <= index < len(words) else ""
  if first_word[:1].islower():
    candidate = span[:1].lower() + span[1:]
  else:
    candidate = span[:1].upper() + span[1:]
  candidate = candidate.rstrip(".").replace("\n", " ")
  return candidate if candidate in text else span


def _convert_multirc(row: dict) -> Iterator[dict]:
  passage = row["passage"]
  for question in passage["questions"]:
    for answer in question["answers"]:
      yield {
          "paragraph": passage["text"],
          "question": question["question"],
          "answer": answer["text"],
          "label": _label_id("multirc", answer.get("label")),
          "idx": {
              "paragraph": row["idx"],
              "question": question["idx"],
              "answer": answer["idx"],
          },
      }


def _convert_record(row: dict) -> Iterator[dict]:
  text = row["passage"]["text"]
  # Entity offsets in the release are inclusive at both ends.
  entities = sorted({text[e["start"]:e["end"] + 1]
                     for e in row["passage"]["entities"]})
  for qa in row["qas"]:
    yield {
        "passage": text,
        "query": qa["query"],
        "entities": entities,
        "answers": sorted({a["text"] for a in qa.get("answers", ())}),
        "idx": {"passage": row["idx"], "query": qa["idx"]},
    }


def _convert_wsc(row: dict) -> Iterator[dict]:
  target = row["target"]
  text = row["text"]
  yield {
      "text": text,
      "span1_index": target["span1_index"],
      "span2_index": target["span2_index"],
      "span1_text": _repaired_span(text, target["span1_text"],
                                   target["span1_index"]),
      "span2_text": _repaired_span(text, target["span2_text"],
                                   target["span2_index"]),
      "idx": row["idx"],
      "label": _label_id("wsc.fixed", row.get("label")),
  }


def _convert_flat(config: str, row: dict) -> Iterator[dict]:
  example = {name: row[name] for name in schema.TEXT_FIELDS[config]}
  if config == "wic":
    for name in ("start1", "start2", "end1", "end2"):
      example[name] = row[name]
  # AX-b's release writes `idx` as a string ("0"); TFDS stores int32.
  example["idx"] = int(row["idx"])
  example["label"] = _label_id(config, row.get("label"))
  yield example


def convert_row(config: str, row: dict) -> Iterator[dict]:
  """Yields the TFDS-style examples of one release row."""
  if config == "multirc":
    yield from _convert_multirc(row)
  elif config == "record":
    yield from _convert_record(row)
  elif config == "wsc.fixed":
    yield from _convert_wsc(row)
  else:
    yield from _convert_flat(config, row)


@dataclasses.dataclass(frozen=True)
class SuperGlueFiles:
  """Local reader of one SuperGLUE config, for `sources.TfdsOrLocalSource`.

  Attributes:
    config: TFDS super_glue config name (`boolq`, ..., `wsc.fixed`, `axg`).
  """
  config: str

  @property
  def element_spec(self) -> dict:
    return schema.element_spec(self.config)

  def files(self, root: str, split: str) -> list[str]:
    """The file `split` is read from, checked to exist; parses nothing.

    Raises:
      FileNotFoundError: naming the file and the expected layout.
    """
    return [split_file(root, self.config, split)]

  def read(self, root: str, split: str) -> list[dict]:
    """Returns all examples of `split`, in file order."""
    path = split_file(root, self.config, split)
    examples = []
    with tf.io.gfile.GFile(path, "r") as f:
      for line_number, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{line_number} is not valid JSON.") from e
        examples.extend(convert_row(self.config, row))
    return examples
