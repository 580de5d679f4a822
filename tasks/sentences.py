"""SeqIO tasks constructed on SST-2's sentences, and T5-style multi-task
mixtures of them with SST-2 itself.

Registered, for `length` and `negation` (`prompt_tuning.data.sentence_tasks`):

* `sst2_<name>_v001`: `<name> sentence: S` -> the constructed label;
* `taskless_sst2_<name>_v001`: `sentence: S` -> the same label;
* `<either>_rank`: the same task scored by rank classification.

Mixtures (T5's supervised multi-task setting, task names in the inputs):

* `sst2_multitask_v001`: `glue_sst2_v002`, `sst2_length_v001` and
  `sst2_negation_v001`, rate 1 each: no task is the default a model trained
  on it falls back to when the input names none.

Data are SST-2's (TFDS `glue/sst2:2.0.0`, or GLUE's files under
`PROMPT_TUNING_GLUE_DIR`), with SST-2's splits.
"""

import functools

from prompt_tuning.data import glue_files
from prompt_tuning.data import glue_tasks
from prompt_tuning.data import locations
from prompt_tuning.data import metrics
from prompt_tuning.data import postprocessors
from prompt_tuning.data import registration
from prompt_tuning.data import sentence_tasks
from prompt_tuning.data import sources

MULTITASK_MIXTURE = "sst2_multitask_v001"


def _sst2_source() -> sources.TfdsOrLocalSource:
  return sources.TfdsOrLocalSource(
      glue_tasks.tfds_name("sst2"),
      splits=glue_tasks.config("sst2").splits,
      local=sources.LocalFiles(directory=locations.glue_dir,
                               reader=glue_files.reader("sst2")))


for _name, _task in sentence_tasks.TASKS.items():
  for _taskless in (True, False):
    registration.add_task(
        sentence_tasks.task_name(_name, _taskless),
        source=_sst2_source(),
        text_preprocessor=sentence_tasks.text_preprocessor(_name, _taskless),
        postprocess_fn=functools.partial(postprocessors.class_id,
                                         class_names=_task.label_names),
        metric_fns=[metrics.accuracy],
        rank_labels=_task.label_names)

registration.add_mixture(MULTITASK_MIXTURE, [
    (glue_tasks.task_name("sst2", taskless=False), 1.0),
    (sentence_tasks.task_name("length"), 1.0),
    (sentence_tasks.task_name("negation"), 1.0),
])
