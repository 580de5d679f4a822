"""Registers text-to-text tasks with SeqIO, safely when imported twice.

Every task here is a text preprocessor producing string `inputs`/`targets`,
followed by T5's standard tail: tokenize with the shared T5 vocabulary
(keeping `*_pretokenized` copies for the postprocessors), an optional cache
point, and EOS after trimming. Re-registering a name replaces the old entry,
so re-importing (or reloading) a task module never raises.

A classification task can get its rank-classification twin `<name>_rank`
(`prompt_tuning.data.rank_classification`) in the same call, by passing its
label strings as `rank_labels`.
"""

from typing import Any, Callable, Optional, Sequence

import seqio

from prompt_tuning.data import rank_classification
from prompt_tuning.data import vocab


def replace_task(name: str, **task_kwargs: Any) -> seqio.Task:
  """`seqio.TaskRegistry.add(name, **task_kwargs)`, replacing any task
  already registered under `name`."""
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, **task_kwargs)


def add_task(
    name: str,
    source: seqio.DataSource,
    text_preprocessor: Callable[..., Any],
    postprocess_fn: Optional[Callable[..., Any]] = None,
    metric_fns: Sequence[Callable[..., Any]] = (),
    rank_labels: Sequence[str] = (),
    after_cache: Sequence[Callable[..., Any]] = (),
) -> seqio.Task:
  """Registers (or replaces) a text-to-text task and returns it.

  Preprocessing: `text_preprocessor`, tokenization, the cache point, then
  `after_cache` (e.g. an unsupervised objective, so each epoch draws anew),
  then EOS.

  With `rank_labels` (the target strings in class-id order) it also
  registers the scored variant `<name>_rank` (same data and metrics, the
  label picked by log-likelihood instead of decoding).
  """
  task = replace_task(
      name,
      source=source,
      output_features=vocab.output_features(),
      preprocessors=[
          text_preprocessor,
          seqio.preprocessors.tokenize,
          seqio.CacheDatasetPlaceholder(),
          *after_cache,
          seqio.preprocessors.append_eos_after_trim,
      ],
      postprocess_fn=postprocess_fn,
      metric_fns=list(metric_fns),
  )
  if rank_labels:
    rank_classification.register_variant(task, rank_labels)
  return task


def leaf_tasks(mixture_or_task_name: str) -> list[seqio.Task]:
  """The tasks of a registered mixture, or the registered task itself."""
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  if isinstance(provider, seqio.Mixture):
    return list(provider.tasks)
  return [provider]


def add_mixture(name: str,
                tasks: Sequence[tuple[str, Any]]) -> seqio.Mixture:
  """Registers (or replaces) a mixture of `(task name, rate)` pairs."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, list(tasks))
