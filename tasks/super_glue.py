"""SeqIO tasks for SuperGLUE v1.0.2, with and without T5's task prefixes.

Registered (the paper's setting, no task name in the inputs):

* `taskless_super_glue_{boolq,cb,copa,multirc,record,rte,wic}_v102`
  (train / validation / test),
* `taskless_super_glue_wsc_v102_simple_train` (train, correct referents only)
  and `taskless_super_glue_wsc_v102_simple_eval` (validation / test),
* `taskless_super_glue_{axb,axg}_v102` (test: the diagnostics),
* mixture `taskless_super_glue_v102`: the eight tasks, each sampled in
  proportion to its training examples (capped, see
  `prompt_tuning.data.mixing`); the WSC eval task rides along at rate 0.
* rank-classification variants `<task>_rank` of the closed label-set tasks
  (BoolQ, CB, COPA, MultiRC, RTE, WiC, AX-b, AX-g; see
  `prompt_tuning.data.rank_classification`), and the evaluation-only mixture
  `taskless_super_glue_v102_rank` (those variants plus ReCoRD and WSC,
  decoded).

and the same names without `taskless_` (plus mixture `super_glue_v102`) for
T5's original inputs with the leading task name kept (rank variants and
mixture included).

Data come from TFDS `super_glue/<config>:1.0.2`, or from a directory in the
official release layout when `PROMPT_TUNING_SUPER_GLUE_DIR` or the gin
binding `prompt_tuning.data.locations.super_glue_dir.path` is set (looked up
at read time). Label strings per task: `prompt_tuning.data.super_glue.LABELS`.
"""

import functools

from prompt_tuning.data import locations
from prompt_tuning.data import metrics
from prompt_tuning.data import mixing
from prompt_tuning.data import postprocessors
from prompt_tuning.data import rank_classification
from prompt_tuning.data import registration
from prompt_tuning.data import sources
from prompt_tuning.data import super_glue
from prompt_tuning.data import super_glue_files
from prompt_tuning.data import super_glue_schema

_SPLITS = {
    "wsc_simple_train": ("train",),
    "wsc_simple_eval": ("validation", "test"),
    # The diagnostics are test-only.
    **{b: ("test",) for b in super_glue.DIAGNOSTIC_BENCHMARKS},
}
_DEFAULT_SPLITS = ("train", "validation", "test")


def _class_id(benchmark: str):
  return functools.partial(
      postprocessors.class_id,
      class_names=super_glue_schema.CLASS_NAMES[
          super_glue.tfds_config(benchmark)])


def _evaluation(benchmark: str):
  """(postprocess_fn, metric_fns) of a benchmark, the official metrics."""
  if benchmark in ("boolq", "copa", "rte", "wic"):
    return _class_id(benchmark), [metrics.accuracy]
  if benchmark == "cb":
    return _class_id(benchmark), [
        metrics.accuracy, functools.partial(metrics.macro_f1, num_classes=3)
    ]
  if benchmark == "multirc":
    return postprocessors.multirc, [metrics.multirc_f1a_and_exact_match]
  if benchmark == "record":
    return (postprocessors.answers_or_prediction,
            [metrics.squad_f1_and_exact_match])
  if benchmark == "axb":
    return _class_id(benchmark), [metrics.matthews_corrcoef]
  if benchmark == "axg":
    return postprocessors.axg, [metrics.accuracy_and_gender_parity]
  if benchmark == "wsc_simple_eval":
    return postprocessors.wsc_simple, [metrics.accuracy]
  if benchmark == "wsc_simple_train":
    return None, []
  raise ValueError(f"Unknown SuperGLUE benchmark {benchmark!r}.")


def _rank_labels(benchmark: str) -> tuple[str, ...]:
  """Label strings to rank; empty for free-text answers (ReCoRD, WSC)."""
  return super_glue.label_strings(super_glue.task_name(benchmark))


def _source(benchmark: str) -> sources.TfdsOrLocalSource:
  config = super_glue.tfds_config(benchmark)
  transforms = {}
  if benchmark == "record":  # T5 trains on one row per gold answer.
    transforms["train"] = super_glue.record_rows_per_answer
  return sources.TfdsOrLocalSource(
      super_glue_schema.tfds_name(config),
      splits=_SPLITS.get(benchmark, _DEFAULT_SPLITS),
      local=sources.LocalFiles(directory=locations.super_glue_dir,
                               reader=super_glue_files.SuperGlueFiles(config)),
      split_transforms=transforms)


def _register(taskless: bool) -> None:
  """Registers one family (taskless or T5-prefixed) of tasks and mixture."""
  benchmarks = (super_glue.STANDARD_BENCHMARKS
                + super_glue.DIAGNOSTIC_BENCHMARKS + super_glue.WSC_VARIANTS)
  for benchmark in benchmarks:
    postprocess_fn, metric_fns = _evaluation(benchmark)
    registration.add_task(
        super_glue.task_name(benchmark, taskless),
        source=_source(benchmark),
        text_preprocessor=super_glue.text_preprocessor(benchmark, taskless),
        postprocess_fn=postprocess_fn,
        metric_fns=metric_fns,
        rank_labels=_rank_labels(benchmark),
    )
  mixture = [(super_glue.task_name(b, taskless), mixing.capped_examples_rate)
             for b in super_glue.STANDARD_BENCHMARKS]
  mixture.append((super_glue.task_name("wsc_simple_train", taskless),
                  functools.partial(mixing.capped_examples_rate,
                                    positives_only=True)))
  mixture.append((super_glue.task_name("wsc_simple_eval", taskless),
                  mixing.evaluation_only_rate))
  registration.add_mixture(super_glue.mixture_name(taskless), mixture)
  # Evaluation only: the classification tasks rank-classified, ReCoRD and
  # WSC decoded as in the mixture above.
  rank_mixture = []
  for benchmark in super_glue.STANDARD_BENCHMARKS + ("wsc_simple_eval",):
    name = super_glue.task_name(benchmark, taskless)
    if _rank_labels(benchmark):
      name = rank_classification.variant_name(name)
    rank_mixture.append((name, mixing.evaluation_only_rate))
  registration.add_mixture(
      rank_classification.variant_name(super_glue.mixture_name(taskless)),
      rank_mixture)
  # The closed-label benchmarks whose examples carry an int `label`, for
  # P-Tuning v2's multi-task stage (one deep prompt and head over class ids).
  registration.add_mixture(
      super_glue.classification_mixture_name(taskless),
      [(super_glue.task_name(b, taskless), mixing.capped_examples_rate)
       for b in super_glue.CLASSIFICATION_BENCHMARKS])


_register(taskless=True)
_register(taskless=False)
