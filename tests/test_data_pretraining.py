"""Span corruption and prefix LM (prompt_tuning.data.pretraining) on real
text and the real T5 vocabulary: noise share and span lengths near the
settings, inputs and targets interleave back to the original tokens,
sentinels as T5 numbers them, prefix-LM splits."""

import numpy as np
import pytest
import seqio
import tensorflow as tf

from helpers import shared_path
from prompt_tuning.data import locations
from prompt_tuning.data import pretraining
from prompt_tuning.data import vocab as vocab_lib


@pytest.fixture(scope="module")
def vocabulary():
  return vocab_lib.get_vocabulary(str(shared_path(*locations.VOCAB_IN_SHARED)))


@pytest.fixture(scope="module")
def sentences(vocabulary):
  """Tokenized SST-2 dev sentences, as a `targets` dataset."""
  lines = shared_path("data", "glue", "SST-2", "dev.tsv").read_text(
      encoding="utf-8").splitlines()[1:]
  texts = [line.split("\t")[0] for line in lines]
  tokens = [vocabulary.encode(t) for t in texts]
  return tf.data.Dataset.from_generator(
      lambda: ({"targets": np.asarray(t, np.int32)} for t in tokens),
      output_signature={"targets": tf.TensorSpec([None], tf.int32)})


def _interleave(inputs, targets, vocabulary) -> list[int]:
  """The original tokens: each input sentinel replaced by its target span."""
  first = vocabulary.vocab_size - vocabulary.extra_ids
  spans, current = {}, None
  for token in targets:
    if token >= first:
      current = token
      spans[current] = []
    else:
      spans[current].append(token)
  out = []
  for token in inputs:
    out.extend(spans[token] if token >= first else [token])
  return out


def test_chunk_lengths_are_t5s():
  # T5's pretraining lengths: inputs 512 -> chunks of 568, targets 114.
  assert pretraining.span_corruption_lengths(512) == (568, 114)
  tokens, targets = pretraining.span_corruption_lengths(64)
  noise = round(tokens * 0.15)
  spans = round(noise / 3)
  assert tokens - noise + spans + 1 == 64 and targets == noise + spans + 1


def test_noise_mask_share_and_span_lengths():
  masks = [pretraining.random_spans_noise_mask(
      tf.constant(200), tf.random.experimental.stateless_split([i, 7], 2))
           .numpy() for i in range(50)]
  spans, gaps = [], []
  for mask in masks:
    assert mask.sum() == 30 and not mask[0]  # round(200 * .15); non-noise 1st.
    edges = np.flatnonzero(np.diff(mask.astype(int)) != 0) + 1
    runs = np.split(mask, edges)
    spans += [len(r) for r in runs if r[0]]
    gaps += [len(r) for r in runs if not r[0]]
    assert sum(1 for r in runs if r[0]) == 10  # round(30 / 3) spans.
  assert np.mean(spans) == pytest.approx(3.0)
  assert min(spans) >= 1 and max(spans) > 3  # Random, not all of length 3.
  # Deterministic for a seed, different across seeds.
  again = pretraining.random_spans_noise_mask(
      tf.constant(200), tf.random.experimental.stateless_split([0, 7], 2))
  np.testing.assert_array_equal(again.numpy(), masks[0])
  assert not all(np.array_equal(masks[0], m) for m in masks[1:])


def test_span_corruption_interleaves_back_with_t5_sentinels(vocabulary,
                                                            sentences):
  features = {"targets": seqio.Feature(vocabulary)}
  lengths = {"inputs": 64, "targets": 16}
  tokens_length, targets_length = pretraining.span_corruption_lengths(64)
  corrupted = list(pretraining.span_corruption(
      sentences, lengths, features).take(20).as_numpy_iterator())
  stream = np.concatenate([x["targets"] for x in sentences.take(200)
                           .as_numpy_iterator()])
  for i, pair in enumerate(corrupted):
    original = stream[i * tokens_length:(i + 1) * tokens_length].tolist()
    assert _interleave(pair["inputs"].tolist(), pair["targets"].tolist(),
                       vocabulary) == original
    # Full chunks fill the inputs exactly, with room for EOS.
    assert len(pair["inputs"]) == 64 - 1
    assert len(pair["targets"]) == targets_length - 1
    # Sentinels count down from the top: <extra_id_0>, <extra_id_1>, ...
    sentinels = [t for t in pair["targets"] if t >= 32000]
    assert sentinels == list(range(32099, 32099 - len(sentinels), -1))
    assert pair["targets"][0] == 32099
    assert [t for t in pair["inputs"] if t >= 32000] == sentinels
  assert vocabulary.decode([32099]) == "<extra_id_0>"
  assert vocabulary.decode([32098]) == "<extra_id_1>"


def test_prefix_lm_splits_each_chunk_at_a_random_point(sentences):
  lengths = {"inputs": 20, "targets": 14}
  pairs = list(pretraining.prefix_lm(sentences, lengths).take(30)
               .as_numpy_iterator())
  stream = np.concatenate([x["targets"] for x in sentences.take(200)
                           .as_numpy_iterator()])
  chunk = min(20, 14)  # Both sides fit with EOS whatever the split.
  points = []
  for i, pair in enumerate(pairs):
    joined = np.concatenate([pair["inputs"], pair["targets"]])
    np.testing.assert_array_equal(joined, stream[i * chunk:(i + 1) * chunk])
    assert 1 <= len(pair["inputs"]) <= chunk - 1
    assert len(pair["inputs"]) < 20 and len(pair["targets"]) < 14
    points.append(len(pair["inputs"]))
  assert len(set(points)) > 5  # Split points vary.
