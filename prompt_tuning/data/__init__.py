"""Data pipeline: SeqIO sources, text formats, metrics for prompt tuning.

TensorFlow is only the input pipeline here, so this package hides every GPU
from it before any TF op runs; JAX keeps the accelerators to itself.

Where the data comes from is decided when data is read, not at import, by the
settings in `prompt_tuning.data.locations` (a binding first, see
`prompt_tuning.gin_configurables`, then an environment variable, then the
default):

* SuperGLUE: TFDS `super_glue/<config>:1.0.2` by default; a directory in the
  official release layout (`BoolQ/train.jsonl`, `BoolQ/val.jsonl`, ...,
  `AX-b/AX-b.jsonl`) when `PROMPT_TUNING_SUPER_GLUE_DIR` is set or
  `prompt_tuning.data.locations.super_glue_dir.path` is bound.
* GLUE: TFDS `glue/<config>:2.0.0` by default; GLUE's own files
  (`<dir>/SST-2/dev.tsv`, ..., and for MRPC the original MSR Paraphrase files
  `<dir>/MRPC/msr_paraphrase_{train,test}.txt`) when
  `PROMPT_TUNING_GLUE_DIR` is set or `locations.glue_dir.path` is bound.
* TFDS data directory: `PROMPT_TUNING_TFDS_DATA_DIR` or
  `locations.tfds_data_dir.path`; otherwise TFDS's own default.
* Vocabulary: `PROMPT_TUNING_VOCAB` or
  `prompt_tuning.data.vocab.vocabulary_path.path` (a SentencePiece model file,
  or a model directory holding `spiece.model`); default is T5's public
  `gs://t5-data/vocabs/cc_all.32000/sentencepiece.model`.
* Pretraining text: TFDS `c4/en:3.1.0` (prepared beforehand; TFDS builds it
  with Apache Beam), or, with `PROMPT_TUNING_TEXT_FILES` set to
  comma-separated file specs (`a.txt,b.jsonl:key,c.tsv:column`, see
  `prompt_tuning.data.text_files`), the `text_span_corruption` and
  `text_prefix_lm` tasks of `prompt_tuning.tasks.pretraining`.
* `PROMPT_TUNING_OFFLINE=1` (`network.OFFLINE_ENV`): the pre-flight checks
  make no network probe and fail at once where data (an unprepared TFDS
  dataset) or the vocabulary would need the network.

Before loading a model, the pre-flight checks make sure within seconds that
the splits (`availability`) and the vocabulary (`vocab.check_vocabulary`)
can be read, and report the longest label (`labels`) and how many examples
the feature lengths truncate (`truncation`).
"""

import os

# TensorFlow's C++ start-up chatter (no CUDA here, CPU flags) is noise for a
# data pipeline; real errors still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

try:
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):
  # Devices were already initialised by someone else; leave them be.
  pass
