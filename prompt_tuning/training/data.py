"""Model-ready batches from SeqIO tasks and mixtures (TensorFlow on CPU).

Examples are converted with SeqIO's encoder-decoder feature converter
without packing (as the paper trains), padded to `task_feature_lengths`,
and batched with the remainder dropped. The training stream is
deterministic for a seed, so its position (the number of batches consumed)
is all a checkpoint needs to resume it.

A classification run (`EncoderDecoderModel(objective='classification')`)
also needs each example's class id: `train_batches(..., with_label=True)`
passes the task's int `label` feature through the converter as `label`
`[b]` (int32).

`train_batches(..., group_lengths=(64, 128, ...))` groups examples of
similar input length into the same batch (tf.data's
`bucket_by_sequence_length`: an example joins the batch of the smallest
length that holds it, a batch is emitted when full), so that length
bucketing (`training.length_buckets`) cuts away most of the padding. It
changes which examples share a batch and the order the batches come in
(a short bucket fills sooner); the stream stays deterministic for a seed,
so a resumed run skips to the same position.
"""

from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

import prompt_tuning.data  # pylint: disable=unused-import  (hides GPUs from TF)

Batch = dict[str, np.ndarray]
MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens",
                  "decoder_target_tokens", "decoder_loss_weights")
LABEL = "label"


def get_task(name: str) -> seqio.Task | seqio.Mixture:
  """The registered task or mixture `name`, with a helpful error."""
  import prompt_tuning.tasks  # pylint: disable=g-import-not-at-top,unused-import
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError as e:
    known = sorted(seqio.TaskRegistry.names()) + sorted(
        seqio.MixtureRegistry.names())
    close = [k for k in known if name.split("_v")[0] in k][:8]
    raise ValueError(
        f"Unknown task or mixture {name!r}. "
        + (f"Did you mean one of {close}? " if close else "")
        + "Register it in prompt_tuning.tasks or check MIXTURE_OR_TASK_NAME."
    ) from e


def feature_converter(with_label: bool = False) -> seqio.FeatureConverter:
  """SeqIO's unpacked encoder-decoder converter; `with_label` passes the
  task's `label` through (as a `[1]` int32 feature, see `train_batches`)."""
  passthrough = None
  if with_label:
    passthrough = {LABEL: seqio.FeatureConverter.FeatureSpec(tf.int32,
                                                              rank=1)}
  return seqio.EncDecFeatureConverter(pack=False,
                                      passthrough_features=passthrough)


def _label_as_feature(ds: tf.data.Dataset, task_name: str) -> tf.data.Dataset:
  """Reshapes each example's scalar `label` to `[1]` int32 for the converter."""

  def fn(x):
    if LABEL not in x:
      raise KeyError(
          f"{task_name} examples have no {LABEL!r} feature (they have "
          f"{sorted(x)}), which objective='classification' trains on; use a "
          "classification task (e.g. SuperGLUE RTE, BoolQ, CB).")
    return dict(x, **{LABEL: tf.reshape(tf.cast(x[LABEL], tf.int32), [1])})
  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def train_batches(task_name: str, task_feature_lengths: Mapping[str, int],
                  batch_size: int, *, seed: int = 0, start_position: int = 0,
                  split: str = "train",
                  with_label: bool = False,
                  shard_info: Optional[seqio.ShardInfo] = None,
                  group_lengths: Optional[Sequence[int]] = None
                  ) -> Iterator[Batch]:
  """An endless, deterministic stream of training batches.

  Args:
    task_name: task or mixture.
    task_feature_lengths: e.g. `{'inputs': 512, 'targets': 8}`.
    batch_size: rows per batch: the global batch size, or with `shard_info`
      this shard's part of it.
    seed: shuffle seed.
    start_position: batches to skip (resuming).
    split: dataset split.
    with_label: also yield each example's class id `label` `[b]` (int32).
    shard_info: read only this shard of the examples (one of a multi-process
      run's data shards, `distributed.batch_feed`); None reads them all.
    group_lengths: ascending input lengths (the inputs length buckets) to
      group examples by (module doc); None batches them in stream order.
  """
  task = get_task(task_name)
  extra = {}
  if with_label and isinstance(task, seqio.Mixture):
    extra["passthrough_features"] = [LABEL]  # Mixtures keep only these.
  ds = task.get_dataset(dict(task_feature_lengths), split=split,
                        shuffle=True, seed=seed, num_epochs=None,
                        use_cached=False, shard_info=shard_info, **extra)
  lengths = dict(task_feature_lengths)
  if with_label:
    ds = _label_as_feature(ds, task_name)
    lengths[LABEL] = 1
  ds = feature_converter(with_label)(ds, lengths)
  if group_lengths:
    ds = _group_by_input_length(ds, group_lengths, batch_size)
  else:
    ds = ds.batch(batch_size, drop_remainder=True)
  if start_position:
    ds = ds.skip(start_position)
  features = MODEL_FEATURES + ((LABEL,) if with_label else ())
  for batch in ds.as_numpy_iterator():
    batch = {k: v for k, v in batch.items() if k in features}
    if with_label:
      batch[LABEL] = batch[LABEL][:, 0]
    yield batch


def _group_by_input_length(ds: tf.data.Dataset, lengths: Sequence[int],
                           batch_size: int) -> tf.data.Dataset:
  """Batches of `batch_size` examples whose inputs fit the same length."""

  def input_length(x):
    return tf.reduce_sum(tf.cast(x["encoder_input_tokens"] != 0, tf.int32))

  boundaries = [int(n) + 1 for n in lengths[:-1]]  # Length n joins bucket n.
  return ds.bucket_by_sequence_length(
      input_length, bucket_boundaries=boundaries,
      bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
      drop_remainder=True)


def pad_batch(batch: Mapping[str, np.ndarray],
              batch_size: int) -> tuple[Batch, int]:
  """Pads the leading axis to `batch_size` with zeros; returns (batch, n)."""
  n = len(next(iter(batch.values())))
  if n > batch_size:
    raise ValueError(f"Batch of {n} is larger than batch_size {batch_size}.")
  padded = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:],
                                           v.dtype)])
            for k, v in batch.items()}
  return padded, n


def numpy_batches(ds: tf.data.Dataset, batch_size: int,
                  features: Optional[tuple[str, ...]] = MODEL_FEATURES,
                  by_length: bool = False
                  ) -> Iterator[tuple[np.ndarray, Batch, int]]:
  """Batches an enumerated `(index, features)` dataset for evaluation.

  With `by_length`, the examples are read into memory and batched in order
  of their input length (ties in dataset order), so that each batch holds
  examples of similar length and length bucketing cuts away most of its
  padding; the indices say which example each row is.

  Yields:
    (indices `[n]`, features padded to `batch_size`, n).
  """
  if by_length:
    batches = _length_sorted_batches(ds, batch_size)
  else:
    batches = ds.batch(batch_size).as_numpy_iterator()
  for indices, feats in batches:
    feats = {k: v for k, v in feats.items()
             if features is None or k in features}
    padded, n = pad_batch(feats, batch_size)
    yield indices, padded, n


def _length_sorted_batches(ds: tf.data.Dataset, batch_size: int
                           ) -> Iterator[tuple[np.ndarray, Batch]]:
  """`(indices, features)` batches in order of input length."""
  rows = list(ds.as_numpy_iterator())
  if not rows:
    return
  order = sorted(range(len(rows)), key=lambda i: int(np.count_nonzero(
      rows[i][1]["encoder_input_tokens"])))
  for start in range(0, len(order), batch_size):
    chunk = [rows[i] for i in order[start:start + batch_size]]
    indices = np.asarray([index for index, _ in chunk])
    yield indices, {k: np.stack([f[k] for _, f in chunk])
                    for k in chunk[0][1]}
