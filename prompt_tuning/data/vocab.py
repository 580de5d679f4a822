"""The T5 SentencePiece vocabulary, located lazily, and whether it is there.

T5 uses a 32,000-piece SentencePiece model plus 100 sentinel ids
(`<extra_id_0>` ... `<extra_id_99>`). Tasks are registered at import time but
the model file is only looked up when text is first encoded or decoded, so a
binding (`prompt_tuning.bindings`; in gin files, see
`prompt_tuning.gin_configurables`) or `PROMPT_TUNING_VOCAB` set after import
still applies:

    prompt_tuning.data.vocab.vocabulary_path.path = "/ckpts/t5_base"

The path may name the `.model` file itself or a model directory that holds
`spiece.model` (as the public T5 checkpoints do). `check_vocabulary` checks,
within seconds and without a download, that the configured one can be read.
"""

import os
from typing import Optional

import seqio
import sentencepiece as spm
import tensorflow as tf

from prompt_tuning import bindings
from prompt_tuning.data import network

DEFAULT_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
VOCAB_ENV = "PROMPT_TUNING_VOCAB"
EXTRA_IDS = 100
_MODEL_FILE_IN_DIR = "spiece.model"


def vocabulary_path(path: Optional[str] = None) -> str:
  """Returns the configured SentencePiece location (file or directory).

  Args:
    path: the location; when None, the bound one (`bindings`), else
      `PROMPT_TUNING_VOCAB`, else `DEFAULT_VOCAB_PATH`.
  """
  path = path or bindings.bound(vocabulary_path).get("path")
  if path:
    return os.fspath(path)
  return os.environ.get(VOCAB_ENV) or DEFAULT_VOCAB_PATH


# The gin binding of `vocabulary_path`'s `path`, named in error messages.
VOCAB_GIN_BINDING = f"{__name__}.{vocabulary_path.__name__}.path"


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


def _vocabulary_fix() -> str:
  return (f"Set {VOCAB_ENV} (or the gin binding {VOCAB_GIN_BINDING}) to a "
          f"local SentencePiece model file, or to a model directory holding "
          f"{_MODEL_FILE_IN_DIR}.")


def check_vocabulary(path: Optional[str] = None) -> str:
  """Checks, within seconds, that the SentencePiece vocabulary is reachable.

  Args:
    path: the vocabulary to check; None checks the configured one
      (`vocabulary_path()`: the binding, else `PROMPT_TUNING_VOCAB`, else
      T5's public model on GCS).

  Returns:
    The resolved model file (a directory is mapped to its `spiece.model`).

  Raises:
    network.DataUnavailableError: a local file is missing or is not a
      SentencePiece model, or a remote one's host does not answer a short
      probe (or the network is off, `network.offline()`); names
      `PROMPT_TUNING_VOCAB` and the gin binding.
  """
  setting = os.fspath(path) if path else vocabulary_path()
  host = network.remote_host(setting)
  if host:
    network.require_network([host], f"The vocabulary {setting} is remote",
                            _vocabulary_fix())
    if setting.endswith(".model"):
      return setting
    return resolve_model_file(setting)
  model_file = resolve_model_file(setting)
  if not tf.io.gfile.exists(model_file):
    raise network.DataUnavailableError(
        f"The vocabulary file {model_file} does not exist. "
        f"{_vocabulary_fix()}")
  try:
    with tf.io.gfile.GFile(model_file, "rb") as f:
      spm.SentencePieceProcessor(model_proto=f.read())
  except Exception as e:  # pylint: disable=broad-except
    raise network.DataUnavailableError(
        f"The vocabulary file {model_file} is not a SentencePiece model "
        f"({type(e).__name__}: {e}). {_vocabulary_fix()}") from e
  return model_file
