"""The features TFDS `super_glue` produces, shared by every SuperGLUE source.

Both data sources (TFDS and a local directory of the official jsonl release)
yield exactly these feature dictionaries, so the text preprocessors never
need to know where an example came from.
"""

from typing import Mapping

import tensorflow as tf

TFDS_VERSION = "1.0.2"

# The SuperGLUE benchmarks, in the leaderboard's order: the one list of them,
# every other table is derived from it. Per benchmark: its TFDS config, its
# folder in the official release, its text fields (TFDS `tfds.features.Text`)
# and the names of its integer `label` classes in TFDS's order (ReCoRD has
# none: its answers are entity strings). WSC is read from TFDS's `wsc.fixed`,
# whose span texts were repaired to be substrings of the sentence.
_TABLE: tuple[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("boolq", "boolq", "BoolQ", ("question", "passage"), ("False", "True")),
    ("cb", "cb", "CB", ("premise", "hypothesis"),
     ("entailment", "contradiction", "neutral")),
    ("copa", "copa", "COPA", ("premise", "choice1", "choice2", "question"),
     ("choice1", "choice2")),
    ("multirc", "multirc", "MultiRC", ("paragraph", "question", "answer"),
     ("False", "True")),
    ("record", "record", "ReCoRD", ("passage", "query"), ()),
    ("rte", "rte", "RTE", ("premise", "hypothesis"),
     ("entailment", "not_entailment")),
    ("wic", "wic", "WiC", ("word", "sentence1", "sentence2"),
     ("False", "True")),
    ("wsc", "wsc.fixed", "WSC", ("text", "span1_text", "span2_text"),
     ("False", "True")),
    ("axb", "axb", "AX-b", ("sentence1", "sentence2"),
     ("entailment", "not_entailment")),
    ("axg", "axg", "AX-g", ("premise", "hypothesis"),
     ("entailment", "not_entailment")),
)

BENCHMARKS: tuple[str, ...] = tuple(row[0] for row in _TABLE)
# The diagnostics: test-only, shipped as one file (`AX-b/AX-b.jsonl`), and
# not part of the SuperGLUE score.
DIAGNOSTICS = ("axb", "axg")
# The benchmarks averaged into the SuperGLUE score.
SCORED: tuple[str, ...] = tuple(b for b in BENCHMARKS if b not in DIAGNOSTICS)

# TFDS config name of each benchmark.
TFDS_CONFIGS: Mapping[str, str] = {row[0]: row[1] for row in _TABLE}
DIAGNOSTIC_CONFIGS = tuple(TFDS_CONFIGS[b] for b in DIAGNOSTICS)
# Folder of each TFDS config in the official release.
RELEASE_FOLDERS: Mapping[str, str] = {row[1]: row[2] for row in _TABLE}
# Text fields of each config.
TEXT_FIELDS: Mapping[str, tuple[str, ...]] = {row[1]: row[3] for row in _TABLE}
# Names of the integer `label` classes of each config that has them.
CLASS_NAMES: Mapping[str, tuple[str, ...]] = {
    row[1]: row[4] for row in _TABLE if row[4]}

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
