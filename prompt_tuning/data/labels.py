"""The fixed label strings of closed label-set tasks, and the longest one.

Each task family owns its labels (`super_glue.LABELS`, `glue.LABELS`,
`glue_tasks.LABELS`, `rank_classification.LABELS`); this module looks a
registered task or mixture up in them, else reads the class names of a
`postprocessors.class_id` postprocessor. Used to size
`TASK_FEATURE_LENGTHS['targets']`, to initialise a prompt from class labels
and to map decoded labels to class ids.
"""

import functools
from typing import Mapping, Optional

import seqio

from prompt_tuning.data import glue
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import postprocessors
from prompt_tuning.data import rank_classification
from prompt_tuning.data import registration
from prompt_tuning.data import super_glue

# Owners of each task family's label strings, consulted in order.
_LABEL_TABLES: tuple[Mapping[str, tuple[str, ...]], ...] = (
    super_glue.LABELS, glue.LABELS, glue_tasks.LABELS,
    rank_classification.LABELS)


def task_labels(task: seqio.Task) -> tuple[str, ...]:
  """A task's fixed target strings; empty when its targets are free text."""
  for table in _LABEL_TABLES:
    if task.name in table:
      return tuple(table[task.name])
  postprocess_fn = getattr(task, "postprocessor", None)
  if (isinstance(postprocess_fn, functools.partial)
      and postprocess_fn.func is postprocessors.class_id):
    return tuple(postprocess_fn.keywords.get("class_names", ()))
  return ()


def label_strings(
    mixture_or_task_name: str) -> Optional[dict[str, tuple[str, ...]]]:
  """The fixed target strings of each closed label-set task.

  Open-ended tasks (ReCoRD, WSC's simple form, MRQA) are left out.

  Args:
    mixture_or_task_name: a registered task or mixture.

  Returns:
    `{task name: labels}` in class-id order, or None if no task of it has a
    closed label set.
  """
  labels = {}
  for task in registration.leaf_tasks(mixture_or_task_name):
    found = task_labels(task)
    if found:
      labels[task.name] = found
  return labels or None


def longest_target(mixture_or_task_name: str) -> Optional[tuple[str, str,
                                                                 int]]:
  """The longest label string of the closed label-set tasks, in tokens.

  Each label is tokenised with its task's own `targets` vocabulary; the count
  includes EOS when the feature appends it. Loads the vocabulary (see
  `vocab.check_vocabulary`).

  Args:
    mixture_or_task_name: a registered task or mixture.

  Returns:
    `(task name, label, token count)` of the longest label (the first one
    found on ties), or None if no task has a closed label set.
  """
  labels = label_strings(mixture_or_task_name)
  if not labels:
    return None
  best = None
  tasks = {t.name: t for t in registration.leaf_tasks(mixture_or_task_name)}
  for name, strings in labels.items():
    feature = tasks[name].output_features["targets"]
    for label in strings:
      count = len(feature.vocabulary.encode(label)) + int(feature.add_eos)
      if best is None or count > best[2]:
        best = (name, label, count)
  return best
