"""GLUE as text-to-text, in T5's `glue_*_v002` formats, with or without the
leading task name.

T5 writes every GLUE example as its text fields in sorted key order, each as
`key: value`, after the benchmark's name, and the class name as the target.
The paper's "taskless" variant (`taskless_glue_*_v200`) drops that first
word, so only a learned prompt tells the frozen model which task it faces.
Formats (taskless; the prefixed variant starts with the name in brackets):

* CoLA [cola]: `sentence: S` -> `unacceptable` / `acceptable`
* SST-2 [sst2]: `sentence: S` -> `negative` / `positive`
* MRPC [mrpc]: `sentence1: A sentence2: B` -> `not_equivalent` / `equivalent`
* QQP [qqp]: `question1: A question2: B` -> `not_duplicate` / `duplicate`
* STS-B [stsb]: `sentence1: A sentence2: B` -> the similarity score rounded
  to the nearest 0.2 (float32, ties to even, as `tf.round`), written with one
  decimal: `3.8`, `5.0`. Unlabelled examples (score -1) give `-1.0`.
* MNLI [mnli]: `hypothesis: H premise: P` -> `entailment` / `neutral` /
  `contradiction`
* QNLI [qnli]: `question: Q sentence: S` -> `entailment` / `not_entailment`
* RTE [rte]: `sentence1: A sentence2: B` -> `entailment` / `not_entailment`
* WNLI [wnli]: `sentence1: A sentence2: B` -> `not_entailment` / `entailment`

Unlabelled (test) classification examples get the target `<unk>`. Every
example keeps TFDS's `idx`. Examples have exactly T5's features: `inputs`,
`targets` and `idx`.
"""

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

UNLABELLED_TARGET = "<unk>"
TFDS_VERSION = "2.0.0"
STSB = "stsb"


@dataclasses.dataclass(frozen=True)
class GlueConfig:
  """One GLUE benchmark as TFDS `glue/<name>` serves it.

  Attributes:
    name: the TFDS config, e.g. `sst2` (also T5's task-name word).
    text_fields: TFDS text features, in T5's (sorted) input order.
    label_names: class names in class-id order; empty for STS-B's score.
    splits: the TFDS splits, which the tasks keep as they are.
  """
  name: str
  text_fields: tuple[str, ...]
  label_names: tuple[str, ...]
  splits: tuple[str, ...] = ("train", "validation", "test")


_NLI = ("entailment", "not_entailment")
_MNLI_SPLITS = ("train", "validation_matched", "validation_mismatched",
                "test_matched", "test_mismatched")

CONFIGS: Mapping[str, GlueConfig] = {c.name: c for c in (
    GlueConfig("cola", ("sentence",), ("unacceptable", "acceptable")),
    GlueConfig("sst2", ("sentence",), ("negative", "positive")),
    GlueConfig("mrpc", ("sentence1", "sentence2"),
               ("not_equivalent", "equivalent")),
    GlueConfig("qqp", ("question1", "question2"),
               ("not_duplicate", "duplicate")),
    GlueConfig(STSB, ("sentence1", "sentence2"), ()),
    GlueConfig("mnli", ("hypothesis", "premise"),
               ("entailment", "neutral", "contradiction"), _MNLI_SPLITS),
    GlueConfig("qnli", ("question", "sentence"), _NLI),
    GlueConfig("rte", ("sentence1", "sentence2"), _NLI),
    GlueConfig("wnli", ("sentence1", "sentence2"),
               ("not_entailment", "entailment")),
)}
BENCHMARKS = tuple(CONFIGS)

# STS-B's possible targets: the scores 0.0, 0.2, ..., 5.0 as T5 writes them.
STSB_TARGETS = tuple(f"{k / 5:.1f}" for k in range(26))


def config(benchmark: str) -> GlueConfig:
  """The `GlueConfig` of `cola`, ..., `wnli`; raises KeyError otherwise."""
  try:
    return CONFIGS[benchmark]
  except KeyError:
    raise KeyError(f"Unknown GLUE benchmark {benchmark!r}; known: "
                   f"{', '.join(BENCHMARKS)}.") from None


def tfds_name(benchmark: str) -> str:
  """e.g. `glue/sst2:2.0.0`."""
  return f"glue/{config(benchmark).name}:{TFDS_VERSION}"


def task_name(benchmark: str, taskless: bool = True) -> str:
  """`taskless_glue_sst2_v200` (the paper's) or `glue_sst2_v002` (T5's)."""
  name = config(benchmark).name
  return f"taskless_glue_{name}_v200" if taskless else f"glue_{name}_v002"


def _build_labels() -> dict[str, tuple[str, ...]]:
  labels = {}
  for benchmark, cfg in CONFIGS.items():
    for taskless in (True, False):
      labels[task_name(benchmark, taskless)] = (
          STSB_TARGETS if benchmark == STSB else cfg.label_names)
  return labels


# Target strings of each registered GLUE task, in class-id order (STS-B: its
# 26 score strings, for sizing targets; it is scored as a number).
LABELS: Mapping[str, tuple[str, ...]] = _build_labels()


def _inputs(prefix: Optional[str], fields: Sequence[str],
            x: Mapping[str, tf.Tensor]) -> tf.Tensor:
  parts = [prefix] if prefix else []
  for field in fields:
    parts.extend([f"{field}:", x[field]])
  return tf.strings.join(parts, separator=" ")


def stsb_target(score: tf.Tensor) -> tf.Tensor:
  """STS-B score(s) -> text rounded to the nearest 0.2, e.g. `3.8`.

  Args:
    score: float32 scores, any shape.

  Returns:
    Strings of the same shape: `round(score * 5) / 5` (ties to even) with
    one decimal.
  """
  score = tf.cast(score, tf.float32)
  return tf.strings.as_string(tf.round(score * 5.0) / 5.0, precision=1)


def class_target(label: tf.Tensor, label_names: Sequence[str]) -> tf.Tensor:
  """Class id(s) -> class name, `<unk>` for -1 (unlabelled)."""
  names = tf.constant(list(label_names))
  known = tf.gather(names, tf.maximum(tf.cast(label, tf.int64), 0))
  return tf.where(label < 0, tf.constant(UNLABELLED_TARGET), known)


def text_preprocessor(benchmark: str, taskless: bool = True) -> Callable:
  """Returns the TFDS `glue/<benchmark>` -> `{inputs, targets, idx}` map.

  Args:
    benchmark: `cola`, `sst2`, `mrpc`, `qqp`, `stsb`, `mnli`, `qnli`, `rte`
      or `wnli`.
    taskless: drop T5's leading task name (the paper's setting).

  Returns:
    A function over `tf.data.Dataset`s of TFDS glue features (scalars).
  """
  cfg = config(benchmark)
  prefix = None if taskless else cfg.name

  @seqio.map_over_dataset
  def fn(x):
    if cfg.name == STSB:
      target = stsb_target(x["label"])
    else:
      target = class_target(x["label"], cfg.label_names)
    return {
        "inputs": _inputs(prefix, cfg.text_fields, x),
        "targets": target,
        "idx": x["idx"],
    }

  return fn
