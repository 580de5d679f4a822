"""QQP and MRPC in one format, for the paper's domain-shift experiment.

A prompt trained on one paraphrase dataset is evaluated zero-shot on the
other (Section 5), so both are cast to the same input keys and the same label
words: `sentence1: A sentence2: B` -> `not_equivalent` / `equivalent`.
QQP's `question1`/`question2` fill the sentence slots and its
`not_duplicate`/`duplicate` classes (same ids) take MRPC's label words.
"""

from typing import Callable, Mapping

import seqio
import tensorflow as tf

UNLABELLED_TARGET = "<unk>"
PARAPHRASE_LABELS = ("not_equivalent", "equivalent")
TFDS_VERSION = "2.0.0"

# TFDS glue config -> its two text fields, in input order.
TEXT_FIELDS: Mapping[str, tuple[str, str]] = {
    "qqp": ("question1", "question2"),
    "mrpc": ("sentence1", "sentence2"),
}


def tfds_name(config: str) -> str:
  """Returns e.g. `glue/qqp:2.0.0`."""
  return f"glue/{config}:{TFDS_VERSION}"


def task_name(config: str) -> str:
  """Registered name of a domain-shift paraphrase task, e.g. `..._qqp_...`."""
  if config not in TEXT_FIELDS:
    raise ValueError(f"Unknown paraphrase dataset {config!r}.")
  return f"domain_shift_{config}_v200"


# Target strings of each registered paraphrase task, in class-id order.
LABELS: Mapping[str, tuple[str, ...]] = {
    task_name(config): PARAPHRASE_LABELS for config in TEXT_FIELDS
}


def paraphrase_preprocessor(config: str) -> Callable:
  """Returns the TFDS glue/<config> -> shared-format preprocessor."""
  first, second = TEXT_FIELDS[config]
  names = tf.constant(list(PARAPHRASE_LABELS))

  @seqio.map_over_dataset
  def fn(x):
    label = x["label"]
    target = tf.where(label < 0, tf.constant(UNLABELLED_TARGET),
                      tf.gather(names, tf.maximum(label, 0)))
    inputs = tf.strings.join(
        ["sentence1:", x[first], "sentence2:", x[second]], separator=" ")
    return {"inputs": inputs, "targets": target, "label": label,
            "idx": x["idx"]}

  return fn
