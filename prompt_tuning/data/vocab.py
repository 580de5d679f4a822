"""The T5 SentencePiece vocabulary, located lazily and configurable by gin.

T5 uses a 32,000-piece SentencePiece model plus 100 sentinel ids
(`<extra_id_0>` ... `<extra_id_99>`). Tasks are registered at import time but
the model file is only looked up when text is first encoded or decoded, so a
gin binding or `PROMPT_TUNING_VOCAB` set after import still applies:

    prompt_tuning.data.vocab.vocabulary_path.path = "/ckpts/t5_base"

The path may name the `.model` file itself or a model directory that holds
`spiece.model` (as the public T5 checkpoints do).
"""

import os
from typing import Optional

import gin
import seqio
import tensorflow as tf

DEFAULT_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
VOCAB_ENV = "PROMPT_TUNING_VOCAB"
EXTRA_IDS = 100
_MODEL_FILE_IN_DIR = "spiece.model"


@gin.configurable
def vocabulary_path(path: Optional[str] = None) -> str:
  """Returns the configured SentencePiece location (file or directory).

  Args:
    path: explicit or gin-bound location; when None, `PROMPT_TUNING_VOCAB`
      and then `DEFAULT_VOCAB_PATH` are used.
  """
  if path:
    return os.fspath(path)
  return os.environ.get(VOCAB_ENV) or DEFAULT_VOCAB_PATH


def resolve_model_file(path: str) -> str:
  """Maps a model directory to its `spiece.model`; a file path is kept."""
  if not path.endswith(".model") and tf.io.gfile.isdir(path):
    return os.path.join(path, _MODEL_FILE_IN_DIR)
  return path


class ConfiguredVocabulary(seqio.SentencePieceVocabulary):
  """A SentencePiece vocabulary whose file is resolved when first used.

  With `path=None` the location comes from `vocabulary_path()` at every use,
  and the model is reloaded if that setting changed, so all tasks can share a
  single instance built at import time.
  """

  def __init__(self, path: Optional[str] = None, extra_ids: int = EXTRA_IDS):
    self._fixed_path = path
    self._resolved_from: Optional[str] = None
    super().__init__(sentencepiece_model_file="", extra_ids=extra_ids)

  def _current_model_file(self) -> str:
    setting = self._fixed_path or vocabulary_path()
    if setting != self._resolved_from:
      self._sentencepiece_model_file = resolve_model_file(setting)
      self._resolved_from = setting
      self._model = None
    return self._sentencepiece_model_file

  def _model_context(self):
    self._current_model_file()
    return super()._model_context()

  @property
  def sentencepiece_model_file(self) -> str:
    return self._current_model_file()

  def __getstate__(self):
    state = super().__getstate__()
    state.pop("_resolved_from", None)
    return state

  def __setstate__(self, state):
    super().__setstate__(state)
    self._resolved_from = None

  def __eq__(self, other):
    if not isinstance(other, seqio.SentencePieceVocabulary):
      return False
    return (self.sentencepiece_model_file == other.sentencepiece_model_file
            and self.extra_ids == other.extra_ids)

  def __str__(self) -> str:
    return (f"ConfiguredVocabulary(file={self.sentencepiece_model_file}, "
            f"extra_ids={self.extra_ids})")


_SHARED_VOCABULARY = ConfiguredVocabulary()


def get_vocabulary(path: Optional[str] = None) -> seqio.Vocabulary:
  """Returns the T5 vocabulary (32k pieces + 100 extra ids).

  Args:
    path: a fixed model file or directory; None returns the shared instance
      that follows `vocabulary_path()` (what every registered task uses).
  """
  if path is None:
    return _SHARED_VOCABULARY
  return ConfiguredVocabulary(path)


def output_features(
    vocabulary: Optional[seqio.Vocabulary] = None
) -> dict[str, seqio.Feature]:
  """T5's text-to-text features: `inputs` and `targets`, both with EOS."""
  vocabulary = vocabulary or get_vocabulary()
  return {
      "inputs": seqio.Feature(vocabulary, add_eos=True, required=False),
      "targets": seqio.Feature(vocabulary, add_eos=True),
  }
