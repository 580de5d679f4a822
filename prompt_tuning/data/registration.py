"""Registers text-to-text tasks with SeqIO, safely when imported twice.

Every task here is a text preprocessor producing string `inputs`/`targets`,
followed by T5's standard tail: tokenize with the shared T5 vocabulary
(keeping `*_pretokenized` copies for the postprocessors), an optional cache
point, and EOS after trimming. Re-registering a name replaces the old entry,
so re-importing (or reloading) a task module never raises.
"""

from typing import Any, Callable, Optional, Sequence

import seqio

from prompt_tuning.data import vocab


def add_task(
    name: str,
    source: seqio.DataSource,
    text_preprocessor: Callable[..., Any],
    postprocess_fn: Optional[Callable[..., Any]] = None,
    metric_fns: Sequence[Callable[..., Any]] = (),
) -> seqio.Task:
  """Registers (or replaces) a text-to-text task and returns it."""
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=source,
      output_features=vocab.output_features(),
      preprocessors=[
          text_preprocessor,
          seqio.preprocessors.tokenize,
          seqio.CacheDatasetPlaceholder(),
          seqio.preprocessors.append_eos_after_trim,
      ],
      postprocess_fn=postprocess_fn,
      metric_fns=list(metric_fns),
  )


def add_mixture(name: str,
                tasks: Sequence[tuple[str, Any]]) -> seqio.Mixture:
  """Registers (or replaces) a mixture of `(task name, rate)` pairs."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, list(tasks))
