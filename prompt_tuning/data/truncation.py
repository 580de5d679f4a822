"""How many examples of a split the feature lengths would truncate.

`truncation_report` counts, per feature, the examples longer than
`TASK_FEATURE_LENGTHS` (with EOS), exactly as `get_dataset` tokenises them:
T5's standard pipeline is counted fast (its text steps, then the text
tokenised in batches by the same vocabulary), any other by running all of the
task's steps untrimmed.
"""

import collections
import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning.data import availability


@dataclasses.dataclass
class LengthReport:
  """How many examples of a split exceed one feature's length.

  Attributes:
    feature: e.g. `inputs`.
    length: the feature length checked against.
    num_examples: examples counted.
    num_truncated: examples longer than `length` (with EOS), which training
      and evaluation truncate.
    longest: the longest example, in tokens with EOS (0 if none).
    name: the task or mixture counted.
    split: the split counted.
  """
  feature: str
  length: int
  num_examples: int
  num_truncated: int
  longest: int
  name: str = ""
  split: str = ""

  @property
  def fraction_truncated(self) -> float:
    return self.num_truncated / self.num_examples if self.num_examples else 0.

  def message(self) -> str:
    """A one-line summary, with the fix when examples are truncated."""
    where = f"{self.name}/{self.split}" if self.name else "the data"
    if not self.num_truncated:
      return (f"{self.feature}: all {self.num_examples} examples of {where} "
              f"fit in {self.length} tokens (longest {self.longest}).")
    return (f"{self.feature}: {self.num_truncated} of {self.num_examples} "
            f"examples ({100 * self.fraction_truncated:.2f}%) of {where} are "
            f"longer than {self.length} tokens (longest {self.longest}) and "
            f"are truncated; raise TASK_FEATURE_LENGTHS['{self.feature}'] to "
            "keep them.")


_LENGTH_BATCH = 1024
# Steps that may follow tokenisation without changing untrimmed lengths
# (besides the EOS the feature's `add_eos` asks for).
_EOS_STEPS = (seqio.preprocessors.append_eos_after_trim,
              seqio.preprocessors.append_eos)


def _text_steps(task: seqio.Task) -> Optional[list]:
  """The preprocessors before tokenisation, if the tail is T5's standard one.

  Returns None unless the pipeline is `text steps..., tokenize, [cache
  placeholder], append EOS` with scalar string features to tokenise; only
  then can the lengths be counted from the text in batches.
  """
  steps = list(task.preprocessors)
  positions = [i for i, p in enumerate(steps)
               if p is seqio.preprocessors.tokenize]
  if len(positions) != 1:
    return None
  tail = steps[positions[0] + 1:]
  if not all(isinstance(p, seqio.CacheDatasetPlaceholder) or p in _EOS_STEPS
             for p in tail):
    return None
  if sum(p in _EOS_STEPS for p in tail) > 1:
    return None
  return steps[:positions[0]]


def _preprocessed_text(task: seqio.Task, split: str,
                       steps: Sequence) -> tf.data.Dataset:
  dataset = task.source.get_dataset(split=split, shuffle=False)
  for step in steps:
    dataset = seqio.utils.add_kwargs_to_transform(
        step, sequence_length=None,
        output_features=task.output_features)(dataset)
  return dataset


def _batched_lengths(task: seqio.Task, dataset: tf.data.Dataset,
                     features: Sequence[str]) -> tf.data.Dataset:
  """Batches of token counts (with EOS) of string features, tokenised here."""

  def lengths(batch):
    counts = {}
    for feature in features:
      spec = task.output_features[feature]
      tokens = spec.vocabulary.encode_tf(batch[feature])
      if isinstance(tokens, tf.RaggedTensor):
        count = tokens.row_lengths()
      else:
        count = tf.fill(tf.shape(tokens)[:1], tf.shape(tokens, tf.int64)[1])
      counts[feature] = count + int(spec.add_eos)
    return counts

  only_features = dataset.map(lambda x: {f: x[f] for f in features})
  return only_features.batch(_LENGTH_BATCH).map(lengths)


def _untrimmed_dataset(task: seqio.Task, split: str,
                       sequence_length: Optional[Mapping[str, int]]
                       ) -> tf.data.Dataset:
  """`split` through all of the task's steps, in file order, untrimmed.

  Steps that size their output by the feature lengths (span corruption,
  prefix LM) get `sequence_length`; the EOS steps get None, so they append
  EOS without trimming anything.
  """
  dataset = task.source.get_dataset(split=split, shuffle=False)
  with seqio.utils.map_seed_manager(0):
    for step in task.preprocessors:
      if isinstance(step, seqio.CacheDatasetPlaceholder):
        continue
      dataset = seqio.utils.add_kwargs_to_transform(
          step, sequence_length=None if step in _EOS_STEPS else
          sequence_length, output_features=task.output_features)(dataset)
  return dataset


def _token_lengths(task: seqio.Task, split: str, features: Sequence[str],
                   max_examples: Optional[int],
                   fast: bool = True,
                   sequence_length: Optional[Mapping[str, int]] = None
                   ) -> dict[str, np.ndarray]:
  """Token counts (with EOS) of each feature of the first examples.

  The standard T5 pipeline is counted fast: its text steps run as usual and
  the text is tokenised in batches by the same vocabulary (giving the ids
  `get_dataset` gives). Any other pipeline, or `fast=False`, runs all of the
  task's steps (`_untrimmed_dataset`, with `sequence_length` for the steps
  that need it, e.g. pretraining objectives).
  """
  steps = _text_steps(task) if fast else None
  dataset = None
  if steps is not None:
    dataset = _preprocessed_text(task, split, steps)
    if not all(f in dataset.element_spec
               and dataset.element_spec[f].dtype == tf.string
               and dataset.element_spec[f].shape.rank == 0
               for f in features):
      dataset = None
  if dataset is not None:
    if max_examples is not None:
      dataset = dataset.take(max_examples)
    dataset = _batched_lengths(task, dataset, features)
  else:
    dataset = _untrimmed_dataset(task, split, sequence_length)
    if max_examples is not None:
      dataset = dataset.take(max_examples)
    dataset = dataset.map(
        lambda x: {f: tf.size(x[f], out_type=tf.int64) for f in features},
        num_parallel_calls=tf.data.AUTOTUNE).batch(_LENGTH_BATCH)
  lengths = collections.defaultdict(list)
  for batch in dataset.as_numpy_iterator():
    for feature in features:
      lengths[feature].append(batch[feature])
  return {f: (np.concatenate(lengths[f]) if lengths[f]
              else np.zeros([0], np.int64)) for f in features}


def truncation_report(mixture_or_task_name: str, split: str,
                      feature_lengths: Mapping[str, int],
                      max_examples: int = 5000) -> list[LengthReport]:
  """Counts the examples that `feature_lengths` would truncate.

  Lengths are those `get_dataset` produces before trimming: tokenised by the
  task's vocabulary, with EOS (a step that sizes its output by the lengths,
  like span corruption, runs with `feature_lengths`, so it needs those it
  reads). The first `max_examples` examples (file order)
  of every task of the task/mixture that has `split` are counted together.
  Runs `availability.check_split_available` first, so it never triggers a
  download.

  Args:
    mixture_or_task_name: a registered task or mixture.
    split: e.g. `train`.
    feature_lengths: e.g. `{"inputs": 512, "targets": 8}`.
    max_examples: per task; None counts all.

  Returns:
    One report per feature of `feature_lengths`, in its order.

  Raises:
    ValueError: a feature is not one of a task's output features, or no
      task has `split`.
  """
  availability.check_split_available(mixture_or_task_name, split)
  features = list(feature_lengths)
  all_lengths: dict[str, list[np.ndarray]] = {f: [] for f in features}
  for task in availability.tasks_with_split(mixture_or_task_name, split):
    unknown = [f for f in features if f not in task.output_features]
    if unknown:
      raise ValueError(f"{task.name} has no feature(s) {unknown}; it has "
                       f"{sorted(task.output_features)}.")
    for feature, lengths in _token_lengths(
        task, split, features, max_examples,
        sequence_length=dict(feature_lengths)).items():
      all_lengths[feature].append(lengths)
  reports = []
  for feature in features:
    lengths = np.concatenate(all_lengths[feature])
    length = int(feature_lengths[feature])
    reports.append(LengthReport(
        feature=feature,
        length=length,
        num_examples=int(lengths.size),
        num_truncated=int(np.sum(lengths > length)),
        longest=int(lengths.max()) if lengths.size else 0,
        name=mixture_or_task_name,
        split=split,
    ))
  return reports
