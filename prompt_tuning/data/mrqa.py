"""MRQA reading comprehension for the paper's domain-shift experiment.

Prompts are trained on SQuAD (in-domain) and evaluated zero-shot on MRQA's
out-of-domain sets. Format, as T5 casts SQuAD: `question: Q context: C` -> the
first gold answer; all gold answers travel along in `answers` for the
max-over-answers SQuAD F1/EM.

TFDS `mrqa` puts SQuAD's dev set in `validation` and each out-of-domain dev
set in `test`; the out-of-domain tasks expose it as both `validation` and
`test`.
"""

from typing import Mapping

import seqio
import tensorflow as tf

TFDS_VERSION = "1.0.0"
IN_DOMAIN = ("squad",)
OUT_OF_DOMAIN = ("textbook_qa", "bio_asq", "race", "relation_extraction",
                 "duo_rc", "drop")
UNANSWERED_TARGET = "<unk>"


def tfds_name(config: str) -> str:
  """Returns e.g. `mrqa/squad:1.0.0`."""
  return f"mrqa/{config}:{TFDS_VERSION}"


def task_name(config: str) -> str:
  """Registered task name, e.g. `mrqa_squad_v100`."""
  if config not in IN_DOMAIN + OUT_OF_DOMAIN:
    raise ValueError(f"Unknown MRQA subset {config!r}.")
  return f"mrqa_{config}_v100"


def splits(config: str) -> Mapping[str, str]:
  """Task split -> TFDS split of an MRQA subset."""
  if config in IN_DOMAIN:
    return {"train": "train", "validation": "validation"}
  return {"validation": "test", "test": "test"}


@seqio.map_over_dataset
def question_context(x):
  """MRQA features -> `question: Q context: C` with the first answer."""
  answers = x["answers"]
  target = tf.cond(
      tf.size(answers) > 0, lambda: answers[0],
      lambda: tf.constant(UNANSWERED_TARGET))
  inputs = tf.strings.join(
      ["question:", x["question"], "context:", x["context"]], separator=" ")
  return {"inputs": inputs, "targets": target, "answers": answers,
          "qid": x["qid"]}
