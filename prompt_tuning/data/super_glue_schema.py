"""The features TFDS `super_glue` produces, shared by every SuperGLUE source.

Both data sources (TFDS and a local directory of the official jsonl release)
yield exactly these feature dictionaries, so the text preprocessors never
need to know where an example came from.
"""

from typing import Mapping

import tensorflow as tf

TFDS_VERSION = "1.0.2"

# TFDS config name for each benchmark. WSC is read from TFDS's `wsc.fixed`,
# whose span texts were repaired to be substrings of the sentence.
TFDS_CONFIGS: Mapping[str, str] = {
    "boolq": "boolq",
    "cb": "cb",
    "copa": "copa",
    "multirc": "multirc",
    "record": "record",
    "rte": "rte",
    "wic": "wic",
    "wsc": "wsc.fixed",
    "axb": "axb",
    "axg": "axg",
}

# Folder of each TFDS config in the official release.
RELEASE_FOLDERS: Mapping[str, str] = {
    "boolq": "BoolQ",
    "cb": "CB",
    "copa": "COPA",
    "multirc": "MultiRC",
    "record": "ReCoRD",
    "rte": "RTE",
    "wic": "WiC",
    "wsc.fixed": "WSC",
    "axb": "AX-b",
    "axg": "AX-g",
}

# The diagnostics ship as one file, `AX-b/AX-b.jsonl`, and are test-only.
DIAGNOSTIC_CONFIGS = ("axb", "axg")

# Names of the integer `label` classes, in TFDS's order. ReCoRD has none:
# its answers are entity strings.
CLASS_NAMES: Mapping[str, tuple[str, ...]] = {
    "boolq": ("False", "True"),
    "cb": ("entailment", "contradiction", "neutral"),
    "copa": ("choice1", "choice2"),
    "multirc": ("False", "True"),
    "rte": ("entailment", "not_entailment"),
    "wic": ("False", "True"),
    "wsc.fixed": ("False", "True"),
    "axb": ("entailment", "not_entailment"),
    "axg": ("entailment", "not_entailment"),
}

# Text fields of each config (TFDS `tfds.features.Text`).
TEXT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "boolq": ("question", "passage"),
    "cb": ("premise", "hypothesis"),
    "copa": ("premise", "choice1", "choice2", "question"),
    "multirc": ("paragraph", "question", "answer"),
    "record": ("passage", "query"),
    "rte": ("premise", "hypothesis"),
    "wic": ("word", "sentence1", "sentence2"),
    "wsc.fixed": ("text", "span1_text", "span2_text"),
    "axb": ("sentence1", "sentence2"),
    "axg": ("premise", "hypothesis"),
}

# Integer (int32) fields besides `idx`.
_INT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "wic": ("start1", "start2", "end1", "end2"),
    "wsc.fixed": ("span1_index", "span2_index"),
}

# Configs whose `idx` is a dictionary of int32 ids rather than one int32.
_NESTED_IDX: Mapping[str, tuple[str, ...]] = {
    "multirc": ("paragraph", "question", "answer"),
    "record": ("passage", "query"),
}

NO_LABEL = -1  # The label of an unlabelled (test) example.


def tfds_name(config: str) -> str:
  """Returns e.g. `super_glue/boolq:1.0.2`."""
  return f"super_glue/{config}:{TFDS_VERSION}"


def element_spec(config: str) -> dict:
  """The `tf.data` element spec of TFDS `super_glue/<config>`."""
  if config not in RELEASE_FOLDERS:
    raise ValueError(f"Unknown super_glue config {config!r}; expected one of "
                     f"{sorted(RELEASE_FOLDERS)}.")
  scalar_string = tf.TensorSpec(shape=(), dtype=tf.string)
  scalar_int32 = tf.TensorSpec(shape=(), dtype=tf.int32)
  spec = {name: scalar_string for name in TEXT_FIELDS[config]}
  for name in _INT_FIELDS.get(config, ()):
    spec[name] = scalar_int32
  if config in _NESTED_IDX:
    spec["idx"] = {name: scalar_int32 for name in _NESTED_IDX[config]}
  else:
    spec["idx"] = scalar_int32
  if config == "record":
    spec["entities"] = tf.TensorSpec(shape=(None,), dtype=tf.string)
    spec["answers"] = tf.TensorSpec(shape=(None,), dtype=tf.string)
  else:
    spec["label"] = tf.TensorSpec(shape=(), dtype=tf.int64)
  return spec
