"""Model-ready batches from SeqIO tasks and mixtures (TensorFlow on CPU).

Examples are converted with SeqIO's encoder-decoder feature converter
without packing (as the paper trains), padded to `task_feature_lengths`,
and batched with the remainder dropped. The training stream is
deterministic for a seed, so its position (the number of batches consumed)
is all a checkpoint needs to resume it.
"""

from typing import Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

import prompt_tuning.data  # pylint: disable=unused-import  (hides GPUs from TF)

Batch = dict[str, np.ndarray]
MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens",
                  "decoder_target_tokens", "decoder_loss_weights")


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


def feature_converter() -> seqio.FeatureConverter:
  return seqio.EncDecFeatureConverter(pack=False)


def train_batches(task_name: str, task_feature_lengths: Mapping[str, int],
                  batch_size: int, *, seed: int = 0, start_position: int = 0,
                  split: str = "train") -> Iterator[Batch]:
  """An endless, deterministic stream of training batches.

  Args:
    task_name: task or mixture.
    task_feature_lengths: e.g. `{'inputs': 512, 'targets': 8}`.
    batch_size: global batch size.
    seed: shuffle seed.
    start_position: batches to skip (resuming).
    split: dataset split.
  """
  task = get_task(task_name)
  ds = task.get_dataset(dict(task_feature_lengths), split=split,
                        shuffle=True, seed=seed, num_epochs=None,
                        use_cached=False)
  ds = feature_converter()(ds, dict(task_feature_lengths))
  ds = ds.batch(batch_size, drop_remainder=True)
  if start_position:
    ds = ds.skip(start_position)
  for batch in ds.as_numpy_iterator():
    yield {k: v for k, v in batch.items() if k in MODEL_FEATURES}


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
                  features: Optional[tuple[str, ...]] = MODEL_FEATURES
                  ) -> Iterator[tuple[np.ndarray, Batch, int]]:
  """Batches an enumerated `(index, features)` dataset for evaluation.

  Yields:
    (indices `[n]`, features padded to `batch_size`, n).
  """
  for indices, feats in ds.batch(batch_size).as_numpy_iterator():
    feats = {k: v for k, v in feats.items()
             if features is None or k in features}
    padded, n = pad_batch(feats, batch_size)
    yield indices, padded, n
