"""Examples-proportional mixing with a cap, as T5 mixes SuperGLUE.

Each task is sampled in proportion to its number of training examples,
clipped at `cap` so a very large task cannot drown the others (the
examples-proportional mixing of the T5 paper, Section 3.5.2). The default cap,
2**19, is one of the limits T5 explored; no SuperGLUE train split reaches it
(ReCoRD, the largest, has about 101k queries), so by default SuperGLUE is
mixed purely in proportion to size. Bind `capped_examples_rate.cap` to change
it (`prompt_tuning.bindings`; in gin files
`prompt_tuning.data.mixing.capped_examples_rate.cap = ...`); rates are
computed when a mixture is read, so the binding applies then.
"""

from typing import Optional

import seqio
import tensorflow as tf

from prompt_tuning import bindings

DEFAULT_CAP = 2**19


def _positive_train_examples(task: seqio.Task) -> int:
  """Training examples labelled 1 (WSC's simple form trains only on those)."""
  dataset = task.source.get_dataset(split="train", shuffle=False)
  return int(dataset.reduce(
      tf.constant(0, tf.int64),
      lambda count, x: count + tf.cast(tf.equal(x["label"], 1), tf.int64)))


def capped_examples_rate(task: seqio.Task, cap: Optional[int] = None,
                         positives_only: Optional[bool] = None) -> float:
  """Mixing rate: the task's training examples, at most `cap`.

  Args:
    task: the task to weigh.
    cap: the largest rate any task gets; None: the bound one (`bindings`),
      else `DEFAULT_CAP`.
    positives_only: count only examples labelled 1 (for tasks whose
      preprocessing keeps only those); None: the bound value, else False.

  Returns:
    The rate.

  Raises:
    ValueError: the training-set size cannot be determined (e.g. a TFDS
      dataset that has not been prepared yet).
  """
  cap = bindings.argument(capped_examples_rate, "cap", cap, DEFAULT_CAP)
  if bindings.argument(capped_examples_rate, "positives_only",
                       positives_only, False):
    count = _positive_train_examples(task)
  else:
    count = task.num_input_examples("train")
  if not count:
    raise ValueError(f"Cannot size the train split of {task.name} for "
                     "mixing; prepare its TFDS dataset or configure a local "
                     "directory first.")
  return float(min(count, cap))


def evaluation_only_rate(task: seqio.Task) -> float:
  """Rate 0: the task is in a mixture for evaluation, never sampled."""
  del task
  return 0.0
