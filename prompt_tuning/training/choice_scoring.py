"""Rank classification with one encoder pass per example.

A `<task>_rank` variant (`prompt_tuning.data.rank_classification`) gives
each example one row per label string: `c` consecutive rows, identical but
for their targets. Scored row by row (`EncoderDecoderModel.score_batch`),
the encoder (prompt included) runs `c` times per example. Here the rows go
back into their examples and `EncoderDecoderModel.score_choices` scores
them: one encoder pass and one set of cross-attention keys and values per
example, then the decoder on every label of it.

  rows, in dataset order                  one scored batch of E examples
  i    inputs_0  targets = label 0   ->   encoder_input_tokens  [E, l]
  i+1  inputs_0  targets = label 1        decoder_input_tokens  [E, c, t]
  i+2  inputs_1  targets = label 0        decoder_target_tokens [E, c, t]
  ...                                     scores                [E, c]

Rows are grouped greedily: consecutive rows with the same encoder input,
at most `c` to a group. A group of fewer rows (the last example cut off by
`num_examples`) gets empty candidate slots (all-zero targets) whose scores
are dropped. A group only ever joins rows whose encoder inputs are equal,
so every row's score is the row path's up to float rounding, whatever the
order of the rows (`tests/test_rank_choice_scoring.py`).
"""

from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from prompt_tuning.training import data
from prompt_tuning.training import distributed
from prompt_tuning.training import length_buckets as buckets_lib

Batch = Mapping[str, np.ndarray]
Row = tuple[int, Mapping[str, np.ndarray]]
ScoreFn = Callable[[Any, Batch], Any]

ENCODER = "encoder_input_tokens"


def examples_per_batch(batch_size: int, num_choices: int,
                       data_shards: int = 1) -> int:
  """Examples per scored batch: at most `batch_size` rows (`examples *
  num_choices`), a multiple of `data_shards` (the batch is split over the
  mesh's `data` axis), and at least `data_shards`."""
  per_batch = (batch_size // num_choices) // data_shards * data_shards
  return max(per_batch, data_shards)


def group_rows(rows: Iterable[Row], num_choices: int) -> list[list[Row]]:
  """Consecutive `(index, features)` rows with equal encoder inputs, at most
  `num_choices` per group, in the rows' order."""
  groups: list[list[Row]] = []
  for index, features in rows:
    last = groups[-1] if groups else None
    if (last is not None and len(last) < num_choices and
        np.array_equal(last[0][1][ENCODER], features[ENCODER])):
      last.append((index, features))
    else:
      groups.append([(index, features)])
  return groups


def choice_batches(groups: Sequence[Sequence[Row]], num_choices: int,
                   examples: int, by_length: bool = False
                   ) -> Iterator[tuple[list[list[int]], dict[str, np.ndarray]]]:
  """Batches of `examples` groups, padded with empty ones.

  With `by_length`, groups are batched in order of their input length (ties
  in row order), as `data.numpy_batches` does for length buckets.

  Yields:
    (each example's row indices, one list per group of the batch; the batch:
    `encoder_input_tokens` `[examples, l]` and each decoder feature of the
    rows `[examples, num_choices, t]`, zero where no row is).
  """
  if by_length:
    groups = sorted(groups, key=lambda g: int(np.count_nonzero(
        g[0][1][ENCODER])))
  for start in range(0, len(groups), examples):
    chunk = groups[start:start + examples]
    first = chunk[0][0][1]
    batch = {ENCODER: np.zeros((examples,) + first[ENCODER].shape,
                               first[ENCODER].dtype)}
    for name in buckets_lib.DECODER_FEATURES:
      if name in first:
        batch[name] = np.zeros((examples, num_choices) + first[name].shape,
                               first[name].dtype)
    for i, group in enumerate(chunk):
      batch[ENCODER][i] = group[0][1][ENCODER]
      for j, (_, features) in enumerate(group):
        for name in batch:
          if name != ENCODER:
            batch[name][i, j] = features[name]
    yield [[index for index, _ in group] for group in chunk], batch


def cut_to_buckets(bucketer: buckets_lib.Bucketer,
                   batch: Batch) -> dict[str, np.ndarray]:
  """`bucketer` applied to a choice batch: decoder features `[E, c, t]` are
  cut (and logged) as the `E * c` rows they hold."""
  examples, num_choices = batch["decoder_target_tokens"].shape[:2]
  rows = {name: value if name == ENCODER else
          value.reshape((examples * num_choices,) + value.shape[2:])
          for name, value in batch.items()}
  fed = bucketer(rows)
  return {name: value if name == ENCODER else
          value.reshape((examples, num_choices) + value.shape[1:])
          for name, value in fed.items()}


def score_rows(score_choices: ScoreFn, params: Any, ds: tf.data.Dataset, *,
               num_choices: int, examples: int,
               feed: Callable[[Batch], Batch] = lambda batch: batch,
               bucketer: buckets_lib.Bucketer | None = None
               ) -> list[tuple[int, float]]:
  """Scores the rows of an enumerated dataset, each example encoded once.

  Args:
    score_choices: `fn(params, batch) -> [E, c]` scores, such as a compiled
      `EncoderDecoderModel.score_choices`.
    params: its parameters.
    ds: `(index, features)` rows as SeqIO's evaluator hands its `score_fn`.
    num_choices: c, the most rows one example has.
    examples: E, examples per batch (`examples_per_batch`).
    feed: the global batch from the full batch (`BatchFeed.from_full`).
    bucketer: length buckets (None: fixed shapes); with buckets the
      examples are batched in order of input length.

  Returns:
    `[(row index, log-likelihood of its targets)]` in index order.
  """
  features = set(data.MODEL_FEATURES)
  rows = [(int(index), {k: v for k, v in row.items() if k in features})
          for index, row in ds.as_numpy_iterator()]
  groups = group_rows(rows, num_choices)
  by_length = bucketer is not None and bucketer.spec is not None
  outputs = []
  for indices, batch in choice_batches(groups, num_choices, examples,
                                       by_length):
    if bucketer is not None:
      batch = cut_to_buckets(bucketer, batch)
    scores = np.asarray(distributed.gather(score_choices(params,
                                                         feed(batch))))
    for i, group in enumerate(indices):
      outputs.extend((index, float(scores[i, j]))
                     for j, index in enumerate(group))
  return sorted(outputs, key=lambda pair: pair[0])
