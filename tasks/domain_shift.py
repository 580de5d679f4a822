"""SeqIO tasks for the paper's domain-shift experiments (Section 5).

Paraphrase transfer, QQP <-> MRPC, in one shared format and label vocabulary
(`sentence1: A sentence2: B` -> `not_equivalent` / `equivalent`) so a prompt
trained on one is evaluated zero-shot on the other:

* `domain_shift_qqp_v200`: TFDS `glue/qqp:2.0.0`.
* `domain_shift_mrpc_v200`: TFDS `glue/mrpc:2.0.0`, or the original MSR
  Paraphrase files when `PROMPT_TUNING_GLUE_DIR` (or the gin binding
  `prompt_tuning.data.locations.glue_dir.path`) names a directory holding
  `MRPC/msr_paraphrase_{train,test}.txt` (see `prompt_tuning.data.mrpc_files`).

Metrics: accuracy and F1 of `equivalent`. Labels:
`prompt_tuning.data.glue.PARAPHRASE_LABELS`. Each also has its scored twin
`domain_shift_{qqp,mrpc}_v200_rank` (rank classification over the two
labels, same metrics).

Reading comprehension, SQuAD -> out-of-domain MRQA, TFDS `mrqa/<subset>:1.0.0`
with SQuAD F1/EM over all gold answers:

* `mrqa_squad_v100` (train / validation),
* `mrqa_{textbook_qa,bio_asq,race,relation_extraction,duo_rc,drop}_v100`
  (validation = test = the subset's MRQA dev set).
"""

import functools

from prompt_tuning.data import glue
from prompt_tuning.data import locations
from prompt_tuning.data import metrics
from prompt_tuning.data import mrpc_files
from prompt_tuning.data import mrqa
from prompt_tuning.data import postprocessors
from prompt_tuning.data import registration
from prompt_tuning.data import sources

_PARAPHRASE_LOCAL = {
    "qqp": None,
    "mrpc": sources.LocalFiles(directory=locations.glue_dir,
                               reader=mrpc_files.MrpcFiles()),
}

for _config, _local in _PARAPHRASE_LOCAL.items():
  registration.add_task(
      glue.task_name(_config),
      source=sources.TfdsOrLocalSource(
          glue.tfds_name(_config),
          splits=("train", "validation", "test"),
          local=_local),
      text_preprocessor=glue.paraphrase_preprocessor(_config),
      postprocess_fn=functools.partial(
          postprocessors.class_id, class_names=glue.PARAPHRASE_LABELS),
      metric_fns=[metrics.accuracy, metrics.binary_f1],
      rank_labels=glue.PARAPHRASE_LABELS,
  )

for _config in mrqa.IN_DOMAIN + mrqa.OUT_OF_DOMAIN:
  registration.add_task(
      mrqa.task_name(_config),
      source=sources.TfdsOrLocalSource(mrqa.tfds_name(_config),
                                       splits=mrqa.splits(_config)),
      text_preprocessor=mrqa.question_context,
      postprocess_fn=postprocessors.answers_or_prediction,
      metric_fns=[metrics.squad_f1_and_exact_match],
  )
