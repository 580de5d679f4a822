"""The T5 vocabulary: default path, lazy gin/env selection, real model, and
whether it is reachable (`check_vocabulary`)."""

import os
import time

import gin
import pytest
import seqio

from helpers import shared_path
from prompt_tuning import bindings
import prompt_tuning.gin_configurables  # pylint: disable=unused-import
from prompt_tuning.data import locations
from prompt_tuning.data import network
from prompt_tuning.data import testing
from prompt_tuning.data import vocab
from test_data_network import FAST_S

_SENTENCES = [
    "the cat sat on the mat", "a dog barked at the moon",
    "premise: it rained hypothesis: the ground is wet",
    "question: is the sky blue passage: the sky is blue on clear days",
] * 20


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
  """Two tiny SentencePiece models of different sizes."""
  first = testing.train_sentencepiece(
      tmp_path_factory.mktemp("spm_a"), _SENTENCES, vocab_size=30)
  second = testing.train_sentencepiece(
      tmp_path_factory.mktemp("spm_b"), _SENTENCES, vocab_size=40)
  return first, second


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch):
  monkeypatch.delenv(vocab.VOCAB_ENV, raising=False)
  monkeypatch.delenv(network.OFFLINE_ENV, raising=False)
  yield
  gin.clear_config()


def test_default_is_public_t5_vocabulary_without_loading_it():
  assert vocab.vocabulary_path() == (
      "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model")
  shared = vocab.get_vocabulary()
  assert shared.sentencepiece_model_file == vocab.DEFAULT_VOCAB_PATH
  assert shared.extra_ids == 100
  features = vocab.output_features()
  assert set(features) == {"inputs", "targets"}
  assert all(f.add_eos for f in features.values())
  assert features["targets"].vocabulary is shared


def test_env_var_after_import_switches_shared_vocabulary(small_models,
                                                         monkeypatch):
  first, second = small_models
  shared = vocab.get_vocabulary()
  monkeypatch.setenv(vocab.VOCAB_ENV, first)
  size_first = shared.vocab_size
  ids = shared.encode("the cat sat")
  assert shared.decode(ids) == "the cat sat"
  monkeypatch.setenv(vocab.VOCAB_ENV, second)
  assert shared.sentencepiece_model_file == second
  assert shared.vocab_size != size_first
  assert shared.vocab_size == seqio.SentencePieceVocabulary(
      second, extra_ids=100).vocab_size


def test_gin_binding_wins_over_env_and_accepts_model_directory(
    small_models, monkeypatch, tmp_path):
  first, second = small_models
  monkeypatch.setenv(vocab.VOCAB_ENV, first)
  model_dir = tmp_path / "t5_model"
  model_dir.mkdir()
  (model_dir / "spiece.model").write_bytes(open(second, "rb").read())
  gin.bind_parameter("prompt_tuning.data.vocab.vocabulary_path.path",
                     str(model_dir))
  shared = vocab.get_vocabulary()
  assert shared.sentencepiece_model_file == str(model_dir / "spiece.model")
  assert shared.encode_tf is not None
  assert shared.decode(shared.encode("a dog barked")) == "a dog barked"


def test_a_binding_without_gin_reaches_the_library(small_models,
                                                   monkeypatch):
  first, second = small_models
  monkeypatch.setenv(vocab.VOCAB_ENV, first)
  gin_source = bindings.install(vocab.vocabulary_path,
                                lambda: {"path": second})
  try:
    assert vocab.vocabulary_path() == second
    assert vocab.vocabulary_path(first) == first  # An argument wins.
  finally:
    bindings.install(vocab.vocabulary_path, gin_source)
  assert gin_source is not None and vocab.vocabulary_path() == first


def test_vocabularies_on_the_same_file_are_equal(small_models):
  first, second = small_models
  assert vocab.get_vocabulary(first) == vocab.get_vocabulary(first)
  assert vocab.get_vocabulary(first) != vocab.get_vocabulary(second)
  assert vocab.get_vocabulary(first) == seqio.SentencePieceVocabulary(
      first, extra_ids=100)


def test_real_t5_vocabulary_from_model_directory():
  model_dir = shared_path(*locations.VOCAB_IN_SHARED[:-1])
  t5_vocab = vocab.get_vocabulary(str(model_dir))
  assert t5_vocab.sentencepiece_model_file.endswith("spiece.model")
  assert t5_vocab.vocab_size == 32100  # 32,000 pieces + 100 extra ids.
  assert t5_vocab.eos_id == 1 and t5_vocab.pad_id == 0
  text = "hypothesis: The cat sat. premise: A cat sat on the mat."
  ids = t5_vocab.encode(text)
  assert max(ids) < 32000
  assert t5_vocab.decode(ids) == text
  assert t5_vocab.encode("<extra_id_0>") == [32099]


# ------------------------------------------------------------ reachability.


def test_local_vocabulary_resolves_and_loads(local_super_glue):
  model = local_super_glue[vocab.VOCAB_ENV]
  assert vocab.check_vocabulary() == model
  model_dir = os.path.dirname(model)
  assert vocab.check_vocabulary(model_dir) == os.path.join(model_dir,
                                                            "spiece.model")


def test_missing_or_broken_vocabulary_names_the_path(monkeypatch, tmp_path):
  missing = tmp_path / "nowhere" / "spiece.model"
  monkeypatch.setenv(vocab.VOCAB_ENV, str(missing))
  with pytest.raises(network.DataUnavailableError) as error:
    vocab.check_vocabulary()
  assert str(missing) in str(error.value)
  assert vocab.VOCAB_ENV in str(error.value)
  broken = tmp_path / "broken.model"
  broken.write_bytes(b"not a model")
  with pytest.raises(network.DataUnavailableError,
                     match="not a SentencePiece model"):
    vocab.check_vocabulary(str(broken))


def test_remote_vocabulary_offline_fails_at_once(monkeypatch):
  monkeypatch.setenv(network.OFFLINE_ENV, "1")
  monkeypatch.delenv(vocab.VOCAB_ENV, raising=False)
  start = time.monotonic()
  with pytest.raises(network.DataUnavailableError) as error:
    vocab.check_vocabulary()  # The default: T5's public model on GCS.
  assert time.monotonic() - start < FAST_S
  message = str(error.value)
  assert vocab.DEFAULT_VOCAB_PATH in message
  assert vocab.VOCAB_ENV in message
  assert "prompt_tuning.data.vocab.vocabulary_path.path" in message
  monkeypatch.setenv(vocab.VOCAB_ENV, "gs://bucket/t5/spiece.model")
  with pytest.raises(network.DataUnavailableError, match=vocab.VOCAB_ENV):
    vocab.check_vocabulary()


def test_remote_vocabulary_probe_gives_up_within_seconds(monkeypatch):
  monkeypatch.setenv(vocab.VOCAB_ENV, vocab.DEFAULT_VOCAB_PATH)
  start = time.monotonic()
  try:
    assert vocab.check_vocabulary() == vocab.DEFAULT_VOCAB_PATH
  except network.DataUnavailableError as e:
    assert "storage.googleapis.com" in str(e)
    assert vocab.VOCAB_ENV in str(e)
  assert time.monotonic() - start < network.PROBE_TIMEOUT_S + FAST_S
