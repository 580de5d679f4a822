"""Tasks constructed on SST-2's sentences, sharing SST-2's input format.

They exist to build a frozen model that needs its task prefix (T5's
supervised multi-task setting): trained on `sst2 sentence: S`,
`length sentence: S` and `negation sentence: S`, a model given only
`sentence: S` (the paper's taskless input) cannot know which of the three
answers is wanted, so a soft prompt has something to learn.

* length [length]: `long` when S has at least `LONG_WORDS` words (split on
  spaces, as SST-2 is tokenized), else `short`;
* negation [negation]: `yes` when S holds a negation word (`NEGATIONS`,
  e.g. `not`, `n't`, `never`), else `no`.

Both labels are functions of the text, so every SST-2 split (test included)
is labelled. On dev, 92.5% of the sentences are long and 22.7% negated. Examples have the features `inputs`, `targets` and `idx`, like
`prompt_tuning.data.glue_tasks`.
"""

import dataclasses
from typing import Any, Callable, Mapping

import seqio
import tensorflow as tf

# SST-2 train's median phrase has 7 words (so about half are long); dev's
# are full sentences, 92.5% of them long.
LONG_WORDS = 8
NEGATIONS = ("not", "n't", "no", "never", "nothing", "nobody", "none",
             "neither", "nor", "without", "cannot")


@dataclasses.dataclass(frozen=True)
class SentenceTask:
  """One constructed task.

  Attributes:
    name: the task word (T5's prefix), e.g. `length`.
    label_names: class names in class-id order.
    label_fn: `[]` tf.string sentence -> `[]` int32 class id.
  """
  name: str
  label_names: tuple[str, ...]
  label_fn: Callable[[tf.Tensor], tf.Tensor]


def length_label(sentence: tf.Tensor) -> tf.Tensor:
  """1 (`long`) for at least `LONG_WORDS` space-separated words, else 0."""
  words = tf.strings.split(tf.strings.strip(sentence), sep=" ")
  return tf.cast(tf.size(words) >= LONG_WORDS, tf.int32)


def negation_label(sentence: tf.Tensor) -> tf.Tensor:
  """1 (`yes`) when a word of the sentence is one of `NEGATIONS`, else 0."""
  words = tf.strings.split(tf.strings.strip(sentence), sep=" ")
  hits = tf.equal(words[:, None], tf.constant(NEGATIONS)[None, :])
  return tf.cast(tf.reduce_any(hits), tf.int32)


TASKS: Mapping[str, SentenceTask] = {t.name: t for t in (
    SentenceTask("length", ("short", "long"), length_label),
    SentenceTask("negation", ("no", "yes"), negation_label),
)}


def definition() -> dict[str, Any]:
  """What defines the constructed tasks' labels, as JSON-able values (part of
  the frozen-model recipe's fingerprint)."""
  return {"tasks": {t.name: list(t.label_names) for t in TASKS.values()},
          "long_words": LONG_WORDS, "negations": list(NEGATIONS)}


def task_name(name: str, taskless: bool = False) -> str:
  """`sst2_length_v001` (prefixed) or `taskless_sst2_length_v001`."""
  if name not in TASKS:
    raise KeyError(f"Unknown constructed task {name!r}; known: "
                   f"{', '.join(TASKS)}.")
  return f"taskless_sst2_{name}_v001" if taskless else f"sst2_{name}_v001"


def text_preprocessor(name: str, taskless: bool = False) -> Callable:
  """TFDS `glue/sst2` features -> `{inputs, targets, idx}` of task `name`."""
  task = TASKS[name]
  prefix = "sentence:" if taskless else f"{task.name} sentence:"

  @seqio.map_over_dataset
  def fn(x):
    label = task.label_fn(x["sentence"])
    return {
        "inputs": tf.strings.join([prefix, x["sentence"]], separator=" "),
        "targets": tf.gather(tf.constant(task.label_names), label),
        "idx": x["idx"],
    }

  return fn
