"""SeqIO tasks for GLUE, in T5's formats, with and without the task name.

Registered, for `cola`, `sst2`, `mrpc`, `qqp`, `stsb`, `mnli`, `qnli`, `rte`
and `wnli`:

* `taskless_glue_<name>_v200`: the paper's setting, no task name in the
  inputs (`sentence: ...`);
* `glue_<name>_v002`: T5's inputs, task name first (`sst2 sentence: ...`);
* `<either name>_rank` (all but STS-B): the same task scored by rank
  classification (`prompt_tuning.data.rank_classification`).

Splits are TFDS's: train / validation / test, and for MNLI train /
validation_matched / validation_mismatched / test_matched / test_mismatched.
Data come from TFDS `glue/<name>:2.0.0`, or from GLUE's own files when
`PROMPT_TUNING_GLUE_DIR` or the gin binding
`prompt_tuning.data.locations.glue_dir.path` names a directory in GLUE's
layout (`SST-2/dev.tsv`, `MRPC/msr_paraphrase_train.txt`, ...; see
`prompt_tuning.data.glue_files`), looked up at read time.

Metrics are T5's: accuracy (SST-2, MNLI, QNLI, RTE, WNLI), F1 of the
positive class and accuracy (MRPC, QQP), Pearson and Spearman correlation of
the predicted number (STS-B) and Matthews correlation (CoLA), all x 100.
Formats and label strings: `prompt_tuning.data.glue_tasks`.
"""

import functools

from prompt_tuning.data import glue_files
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import locations
from prompt_tuning.data import metrics
from prompt_tuning.data import postprocessors
from prompt_tuning.data import registration
from prompt_tuning.data import sources


def _evaluation(benchmark: str):
  """(postprocess_fn, metric_fns) of a benchmark, T5's."""
  if benchmark == glue_tasks.STSB:
    return postprocessors.as_float, [metrics.pearson_corrcoef,
                                     metrics.spearman_corrcoef]
  postprocess_fn = functools.partial(
      postprocessors.class_id,
      class_names=glue_tasks.config(benchmark).label_names)
  if benchmark == "cola":
    return postprocess_fn, [metrics.matthews_corrcoef]
  if benchmark in ("mrpc", "qqp"):
    return postprocess_fn, [metrics.binary_f1, metrics.accuracy]
  return postprocess_fn, [metrics.accuracy]


def _source(benchmark: str) -> sources.TfdsOrLocalSource:
  return sources.TfdsOrLocalSource(
      glue_tasks.tfds_name(benchmark),
      splits=glue_tasks.config(benchmark).splits,
      local=sources.LocalFiles(directory=locations.glue_dir,
                               reader=glue_files.reader(benchmark)))


for _benchmark in glue_tasks.BENCHMARKS:
  _postprocess_fn, _metric_fns = _evaluation(_benchmark)
  for _taskless in (True, False):
    registration.add_task(
        glue_tasks.task_name(_benchmark, _taskless),
        source=_source(_benchmark),
        text_preprocessor=glue_tasks.text_preprocessor(_benchmark,
                                                       _taskless),
        postprocess_fn=_postprocess_fn,
        metric_fns=_metric_fns,
        # STS-B is a regression onto a number; the rest get `<name>_rank`.
        rank_labels=(() if _benchmark == glue_tasks.STSB else
                     glue_tasks.config(_benchmark).label_names),
    )
