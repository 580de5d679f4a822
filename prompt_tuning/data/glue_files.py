"""Reads GLUE from the benchmark's own tsv files, as TFDS `glue` reads them.

The layout is the one GLUE's download script leaves, under one directory
(`PROMPT_TUNING_GLUE_DIR` or `prompt_tuning.data.locations.glue_dir.path`):

    CoLA/{train,dev,test}.tsv       SST-2/{train,dev,test}.tsv
    QQP/{train,dev,test}.tsv        STS-B/{train,dev,test}.tsv
    QNLI/{train,dev,test}.tsv       RTE/{train,dev,test}.tsv
    WNLI/{train,dev,test}.tsv
    MNLI/{train,dev_matched,dev_mismatched,test_matched,test_mismatched}.tsv
    MRPC/msr_paraphrase_{train,test}.txt and dev_ids.tsv (see `mrpc_files`)

Each file is tab-separated with quoting off (`csv.QUOTE_NONE`: some STS-B
sentences open with an unbalanced `"`), UTF-8. Examples get TFDS's features
and numbering: the text fields, `label` (class id, -1 in test files; STS-B:
the float32 score, -1.0 in test) and `idx` (the row's position in its file).
As TFDS does, a row that lacks a field or whose label is empty is skipped
(its position still counts). Only the files of the split being read must
exist; a missing one raises `GlueFileMissingError` naming it and the TFDS
alternative.
"""

import csv
import dataclasses
import io
import os
from typing import Mapping, Optional

import tensorflow as tf

from prompt_tuning import errors
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import locations
from prompt_tuning.data import mrpc_files


class GlueFileMissingError(errors.ConfigError, FileNotFoundError):
  """A GLUE tsv file is not in the configured directory."""


@dataclasses.dataclass(frozen=True)
class TsvLayout:
  """Where one benchmark's tsv files are and which columns hold what.

  Attributes:
    folder: e.g. `SST-2`.
    columns: TFDS feature -> tsv column name (text fields only).
    label_column: the column with the label (absent in test files).
    headerless_columns: for files without a header row (CoLA's train and
      dev), the column names in order; None when every file has a header.
  """
  folder: str
  columns: Mapping[str, str]
  label_column: str
  headerless_columns: Optional[tuple[str, ...]] = None


_PAIR = {"sentence1": "sentence1", "sentence2": "sentence2"}
LAYOUTS: Mapping[str, TsvLayout] = {
    "cola": TsvLayout("CoLA", {"sentence": "sentence"}, "is_acceptable",
                      ("source", "is_acceptable", "original_mark",
                       "sentence")),
    "sst2": TsvLayout("SST-2", {"sentence": "sentence"}, "label"),
    "qqp": TsvLayout("QQP", {"question1": "question1",
                             "question2": "question2"}, "is_duplicate"),
    "stsb": TsvLayout("STS-B", _PAIR, "score"),
    "mnli": TsvLayout("MNLI", {"premise": "sentence1",
                               "hypothesis": "sentence2"}, "gold_label"),
    "qnli": TsvLayout("QNLI", {"question": "question",
                               "sentence": "sentence"}, "label"),
    "rte": TsvLayout("RTE", _PAIR, "label"),
    "wnli": TsvLayout("WNLI", _PAIR, "label"),
}

# Task split -> file name (without `.tsv`).
_FILES = {"train": "train", "validation": "dev", "test": "test"}
_MNLI_FILES = {"train": "train", "validation_matched": "dev_matched",
               "validation_mismatched": "dev_mismatched",
               "test_matched": "test_matched",
               "test_mismatched": "test_mismatched"}


def split_file(benchmark: str, split: str) -> str:
  """The GLUE file of a split, relative to the GLUE directory.

  Raises:
    ValueError: the benchmark has no such split.
  """
  layout = LAYOUTS[benchmark]
  names = _MNLI_FILES if benchmark == "mnli" else _FILES
  if split not in names:
    raise ValueError(f"GLUE {benchmark} has no split {split!r}; it has "
                     f"{', '.join(names)}.")
  return f"{layout.folder}/{names[split]}.tsv"


def _missing(benchmark: str, split: str, path: str, root: str) -> Exception:
  setting = locations.setting_of(locations.glue_dir)
  return GlueFileMissingError(
      f"GLUE {benchmark}/{split} reads {path}, which is missing ({root} is "
      f"the GLUE directory, set by {setting.hint()}). Put GLUE's "
      f"{split_file(benchmark, split)} there, or unset "
      f"{setting.env_var} and the gin binding to read TFDS "
      f"{glue_tasks.tfds_name(benchmark)} instead (prepared in "
      f"{locations.setting_of(locations.tfds_data_dir).env_var}, or "
      "downloaded).")


def _label(benchmark: str, text: Optional[str]):
  """The TFDS label of a label cell; None (skip the row) if it is empty."""
  if text is None or not text.strip():
    return None
  text = text.strip()
  if benchmark == glue_tasks.STSB:
    return float(text)
  names = glue_tasks.config(benchmark).label_names
  return names.index(text) if text in names else int(text)


@dataclasses.dataclass(frozen=True)
class GlueTsvFiles:
  """Local reader of one GLUE benchmark for `sources.TfdsOrLocalSource`.

  Attributes:
    benchmark: `cola`, `sst2`, `qqp`, `stsb`, `mnli`, `qnli`, `rte` or
      `wnli` (MRPC has its own reader, `mrpc_files.MrpcFiles`).
  """
  benchmark: str

  @property
  def element_spec(self) -> dict:
    spec = {field: tf.TensorSpec(shape=(), dtype=tf.string)
            for field in LAYOUTS[self.benchmark].columns}
    label_dtype = (tf.float32 if self.benchmark == glue_tasks.STSB
                   else tf.int64)
    spec["label"] = tf.TensorSpec(shape=(), dtype=label_dtype)
    spec["idx"] = tf.TensorSpec(shape=(), dtype=tf.int32)
    return spec

  def files(self, root: str, split: str) -> list[str]:
    """The file `split` is read from, checked to exist; parses nothing.

    Raises:
      GlueFileMissingError: naming the file and the TFDS alternative.
      ValueError: an unknown split.
    """
    path = os.path.join(root, split_file(self.benchmark, split))
    if not tf.io.gfile.exists(path):
      raise _missing(self.benchmark, split, path, root)
    return [path]

  def read(self, root: str, split: str) -> list[dict]:
    """Returns the examples of `split`, with TFDS's features and `idx`."""
    (path,) = self.files(root, split)
    layout = LAYOUTS[self.benchmark]
    with tf.io.gfile.GFile(path, "rb") as f:
      text = f.read().decode("utf-8-sig")
    lines = io.StringIO(text, newline="")
    if layout.headerless_columns and not split.startswith("test"):
      reader = csv.DictReader(lines, fieldnames=layout.headerless_columns,
                              delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
      reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    # Test files have no label column: every example is unlabelled (-1).
    labelled = layout.label_column in (reader.fieldnames or ())
    unlabelled = -1.0 if self.benchmark == glue_tasks.STSB else -1
    examples = []
    for index, row in enumerate(reader):
      example = {field: row.get(column)
                 for field, column in layout.columns.items()}
      example["label"] = (_label(self.benchmark, row.get(layout.label_column))
                          if labelled else unlabelled)
      if any(value is None for value in example.values()):
        continue  # A corrupt row, as TFDS skips it; its position counts.
      example["idx"] = index
      examples.append(example)
    return examples


def reader(benchmark: str):
  """The local reader of a GLUE benchmark (MRPC: the MSR files)."""
  glue_tasks.config(benchmark)
  if benchmark == "mrpc":
    return mrpc_files.MrpcFiles()
  return GlueTsvFiles(benchmark)
