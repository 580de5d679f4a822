"""SeqIO tasks for pretraining (T5's span corruption) and LM adaptation.

Registered:

* `c4_v220_span_corruption`, `c4_v220_prefix_lm`: TFDS `c4/en:3.1.0`, its
  `text` feature, train / validation. The TFDS data directory is
  `PROMPT_TUNING_TFDS_DATA_DIR` (or the gin binding
  `prompt_tuning.data.locations.tfds_data_dir.path`), else TFDS's default.
  TFDS builds c4 with Apache Beam, never on first use: the pre-flight checks
  fail at once, saying so, when it is not prepared there.
* when `PROMPT_TUNING_TEXT_FILES` is set when this module is imported
  (comma-separated file specs, e.g.
  `a.txt,train.jsonl:passage.text,train.tsv:sentence`; see
  `prompt_tuning.data.text_files`): `text_span_corruption` and
  `text_prefix_lm` over those files (train split only). A bad spec fails
  the import, naming the problem. `register_text_file_tasks(specs)` does the
  same from code.

Objectives, lengths and sentinels: `prompt_tuning.data.pretraining`. The
tasks have no metrics; runs/pretrain.gin and runs/lm_adapt.gin train on them
without evaluating.
"""

import os
from typing import Sequence

from prompt_tuning.data import pretraining_tasks
from prompt_tuning.data import sources
from prompt_tuning.data import text_files

C4_TFDS_NAME = "c4/en:3.1.0"
C4_SPAN_CORRUPTION = "c4_v220_span_corruption"
C4_PREFIX_LM = "c4_v220_prefix_lm"
TEXT_SPAN_CORRUPTION = "text_span_corruption"
TEXT_PREFIX_LM = "text_prefix_lm"


def register_text_file_tasks(specs: Sequence[str]) -> None:
  """(Re-)registers `text_span_corruption` and `text_prefix_lm` over the
  files of `specs` (train split)."""
  source = text_files.text_files_source(specs)
  pretraining_tasks.add_span_corruption_task(TEXT_SPAN_CORRUPTION, source)
  pretraining_tasks.add_prefix_lm_task(TEXT_PREFIX_LM, source)


def specs_from_env() -> list[str]:
  """The comma-separated specs of `PROMPT_TUNING_TEXT_FILES` (empty if
  unset)."""
  value = os.environ.get(text_files.TEXT_FILES_ENV, "")
  return [spec.strip() for spec in value.split(",") if spec.strip()]


_C4 = sources.TfdsOrLocalSource(C4_TFDS_NAME, splits=("train", "validation"))
pretraining_tasks.add_span_corruption_task(C4_SPAN_CORRUPTION, _C4)
pretraining_tasks.add_prefix_lm_task(C4_PREFIX_LM, _C4)

if specs_from_env():
  register_text_file_tasks(specs_from_env())
