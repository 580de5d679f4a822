"""Registers unsupervised pretraining tasks over any source of raw text.

A source yields `{"text": tf.string}` examples (TFDS `c4`, local files via
`prompt_tuning.data.text_files`, ...). The text is tokenized as `targets`
with the shared T5 vocabulary (`vocab.output_features()`, as every task
here), and then an objective from `prompt_tuning.data.pretraining` makes the
`inputs`/`targets` pairs:

  rekey text -> targets, tokenize, cache point, objective,
  append EOS after trimming.

The objective runs after the cache point, so each epoch draws new noise
spans or split points (as T5's pretraining tasks do). The tasks have no
postprocessor and no metrics: they are trained on, not evaluated.
Re-registering a name replaces the old task.
"""

from typing import Callable

import seqio
import tensorflow as tf

from prompt_tuning.data import pretraining
from prompt_tuning.data import registration

TEXT = "text"


@seqio.map_over_dataset
@tf.autograph.experimental.do_not_convert
def text_as_targets(x: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """`{"text": scalar string, ...}` -> `{"targets": the text}` (others
  dropped)."""
  return {"targets": x[TEXT]}


def _add(name: str, source: seqio.DataSource,
         objective: Callable[..., tf.data.Dataset]) -> seqio.Task:
  return registration.add_task(name, source, text_as_targets,
                               after_cache=(objective,))


def add_span_corruption_task(name: str, source: seqio.DataSource
                             ) -> seqio.Task:
  """Registers (or replaces) T5's span-corruption task over `source`.

  With `TASK_FEATURE_LENGTHS` `{'inputs': 512, 'targets': 114}` (T5's) every
  full chunk fills both exactly; see `pretraining.span_corruption_lengths`
  for other input lengths.
  """
  return _add(name, source, pretraining.span_corruption)


def add_prefix_lm_task(name: str, source: seqio.DataSource) -> seqio.Task:
  """Registers (or replaces) the prefix-LM (LM adaptation) task over
  `source`: chunks of `min(inputs, targets)` tokens split at a random point,
  so neither side is ever truncated."""
  return _add(name, source, pretraining.prefix_lm)
