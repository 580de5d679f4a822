"""Unsupervised objectives over token streams: span corruption and prefix LM.

Both take tokenized examples (`targets` `[n]` int32, e.g. text tokenized by
`seqio.preprocessors.tokenize` into the `targets` feature) and return
`inputs`/`targets` pairs; EOS is appended afterwards by
`seqio.preprocessors.append_eos_after_trim`, as in every task here.

* Span corruption (T5's pretraining objective, Raffel et al. 2020): a
  `noise_density` share of each chunk's tokens, in spans of mean length
  `mean_noise_span_length`, is dropped from the inputs; each dropped span is
  replaced by one sentinel and the targets list the dropped spans, each after
  its sentinel. Sentinels count down from the top of the vocabulary: the
  first span of an example gets id `vocab_size - 1` (`<extra_id_0>` with T5's
  100 extra ids), the next `vocab_size - 2`, and so on.
* Prefix LM (the LM adaptation of Lester et al. 2021): each chunk of
  `min(inputs, targets)` tokens is split at a uniformly random point; the
  prefix is the input and the rest the target.

Shape legend: n tokens of one example, s noise spans.
"""

from typing import Mapping

import seqio
import tensorflow as tf

NOISE_DENSITY = 0.15
# The mapped functions are plain TF ops (no Python control flow on tensors):
# tracing them as they are skips AutoGraph's source conversion, seconds per
# pipeline on a small CPU.
_NO_AUTOGRAPH = tf.autograph.experimental.do_not_convert
MEAN_NOISE_SPAN_LENGTH = 3.0


def span_corruption_lengths(inputs_length: int,
                            noise_density: float = NOISE_DENSITY,
                            mean_noise_span_length: float = (
                                MEAN_NOISE_SPAN_LENGTH)) -> tuple[int, int]:
  """(chunk length in tokens, targets length) so inputs fill `inputs_length`.

  A chunk of `t` tokens has `round(t * density)` noise tokens in
  `round(noise / mean)` spans; its inputs hold the other tokens plus one
  sentinel per span and EOS, its targets the noise tokens plus one sentinel
  per span and EOS. Returns the longest `t` whose inputs still fit, e.g.
  inputs 512 -> (568, 114) with T5's settings.
  """

  def lengths(tokens: int) -> tuple[int, int]:
    noise = int(round(tokens * noise_density))
    spans = int(round(noise / mean_noise_span_length))
    return tokens - noise + spans + 1, noise + spans + 1

  if inputs_length < 2:
    raise ValueError(f"inputs_length must be at least 2, got {inputs_length}.")
  tokens = inputs_length - 1
  while lengths(tokens + 1)[0] <= inputs_length:
    tokens += 1
  return tokens, lengths(tokens)[1]


def _random_partition(num_items: tf.Tensor, num_segments: tf.Tensor,
                      seed: tf.Tensor) -> tf.Tensor:
  """Lengths `[num_segments]` (each >= 1) of a random split of `num_items`."""
  # Choose which of the num_items - 1 gaps start a new segment.
  starts = tf.random.experimental.stateless_shuffle(
      tf.range(num_items - 1) < num_segments - 1, seed=seed)
  segment = tf.cumsum(tf.pad(tf.cast(starts, tf.int32), [[1, 0]]))
  return tf.math.segment_sum(tf.ones_like(segment), segment)


def random_spans_noise_mask(length: tf.Tensor, seeds: tf.Tensor,
                            noise_density: float = NOISE_DENSITY,
                            mean_noise_span_length: float = (
                                MEAN_NOISE_SPAN_LENGTH)) -> tf.Tensor:
  """Bool `[length]`: True at noise tokens, in spans, starting with non-noise.

  `round(length * noise_density)` tokens (at least 1, at most length - 1) are
  noise, in `round(noise / mean_noise_span_length)` spans (at least 1); noise
  and non-noise span lengths are random partitions, interleaved non-noise
  first. `seeds` is `[2, 2]` int (stateless seeds).
  """
  real_length = length
  length = tf.maximum(length, 2)  # Room for one token of each kind.
  lengthf = tf.cast(length, tf.float32)
  num_noise = tf.cast(tf.round(lengthf * noise_density), tf.int32)
  num_noise = tf.clip_by_value(num_noise, 1, length - 1)
  num_spans = tf.maximum(tf.cast(
      tf.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length),
      tf.int32), 1)
  noise_lengths = _random_partition(num_noise, num_spans, seeds[0])
  other_lengths = _random_partition(length - num_noise, num_spans, seeds[1])
  span_lengths = tf.reshape(tf.stack([other_lengths, noise_lengths], axis=1),
                            [-1])
  span_starts = tf.cumsum(span_lengths)[:-1]
  is_start = tf.math.unsorted_segment_sum(tf.ones_like(span_starts),
                                          span_starts, length)
  span_index = tf.cumsum(is_start)
  return tf.equal(span_index % 2, 1)[:real_length]


def spans_to_sentinels(tokens: tf.Tensor, mask: tf.Tensor,
                       vocab_size: int) -> tf.Tensor:
  """Replaces each masked span of `tokens` `[n]` by one sentinel id.

  The k-th span (k = 0, 1, ...) becomes `vocab_size - 1 - k`.
  """
  previous = tf.pad(mask[:-1], [[1, 0]])
  first = tf.logical_and(mask, tf.logical_not(previous))
  later = tf.logical_and(mask, previous)
  sentinels = vocab_size - tf.cumsum(tf.cast(first, tokens.dtype))
  tokens = tf.where(first, sentinels, tokens)
  return tf.boolean_mask(tokens, tf.logical_not(later))


def _chunks(dataset: tf.data.Dataset, length: int) -> tf.data.Dataset:
  """Concatenates the examples' `targets` and cuts them into `length` pieces.

  The last, shorter piece is kept. Other features are dropped.
  """
  tokens = dataset.flat_map(_NO_AUTOGRAPH(
      lambda x: tf.data.Dataset.from_tensor_slices(x["targets"])))
  return tokens.batch(length).map(_NO_AUTOGRAPH(lambda t: {"targets": t}))


def span_corruption(dataset: tf.data.Dataset,
                    sequence_length: Mapping[str, int],
                    output_features: Mapping[str, seqio.Feature],
                    noise_density: float = NOISE_DENSITY,
                    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                    ) -> tf.data.Dataset:
  """SeqIO preprocessor: tokenized `targets` -> span-corrupted pairs.

  Chunks are sized by `span_corruption_lengths` so that the inputs fill
  `sequence_length['inputs']` (with EOS) exactly.
  """
  tokens_length, _ = span_corruption_lengths(
      sequence_length["inputs"], noise_density, mean_noise_span_length)
  vocab_size = output_features["targets"].vocabulary.vocab_size

  @seqio.map_over_dataset(num_seeds=1)
  @_NO_AUTOGRAPH
  def corrupt(x, seed):
    tokens = x["targets"]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    mask = random_spans_noise_mask(tf.size(tokens), seeds, noise_density,
                                   mean_noise_span_length)
    return {"inputs": spans_to_sentinels(tokens, mask, vocab_size),
            "targets": spans_to_sentinels(tokens, tf.logical_not(mask),
                                          vocab_size)}

  return corrupt(_chunks(dataset, tokens_length))


def prefix_lm(dataset: tf.data.Dataset,
              sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """SeqIO preprocessor: tokenized `targets` -> (random prefix, the rest).

  Chunks are `min(inputs, targets)` tokens long and each is split at a point
  drawn uniformly from 1 .. n - 1 (a chunk of one token is all target), so
  the prefix (at most n - 1 tokens) and the rest (at most n - 1) both fit
  their feature with EOS: nothing is ever truncated, and the targets always
  continue the inputs' last token. (A longer chunk would have to be cut on
  one side, opening a gap between the visible prefix and its continuation.)
  """
  length = min(sequence_length["inputs"], sequence_length["targets"])
  if length < 2:
    raise ValueError(f"prefix_lm needs inputs and targets lengths >= 2, got "
                     f"{dict(sequence_length)}.")

  @seqio.map_over_dataset(num_seeds=1)
  @_NO_AUTOGRAPH
  def split(x, seed):
    tokens = x["targets"]
    n = tf.size(tokens)
    point = tf.random.stateless_uniform(
        [], seed, minval=1, maxval=tf.maximum(n, 2), dtype=tf.int32)
    point = tf.minimum(point, n - 1)
    return {"inputs": tokens[:point], "targets": tokens[point:]}

  return split(_chunks(dataset, length))
