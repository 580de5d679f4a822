"""Prompt initialisers and the gin files that wire a prompt model."""

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece

from helpers import shared_path, tiny_config
from prompt_tuning import gin_utils
from prompt_tuning.data import locations
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import PromptTransformer
from prompt_tuning.prompts import initializers

KEY = jax.random.PRNGKey(0)
VOCAB, EMBED = 6000, 8


def numbered_table(vocab: int = VOCAB, embed: int = EMBED) -> jnp.ndarray:
  """Row i of the table is filled with i, so rows identify their ids."""
  return jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.float32)[:, None],
                          (vocab, embed))


@pytest.fixture(scope="module")
def spiece():
  return sentencepiece.SentencePieceProcessor(
      model_file=str(shared_path(*locations.VOCAB_IN_SHARED)))


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_random_uniform_ranges_and_determinism():
  init = initializers.random_uniform()
  x = init(KEY, (100, EMBED))
  assert x.shape == (100, EMBED) and x.dtype == jnp.float32
  assert float(x.min()) >= 0.0 and float(x.max()) < 0.5
  np.testing.assert_array_equal(x, init(KEY, (100, EMBED)))
  assert not np.allclose(x, init(jax.random.PRNGKey(1), (100, EMBED)))
  y = initializers.random_uniform(0.1, symmetric=True)(KEY, (100, EMBED))
  assert float(y.min()) >= -0.1 and float(y.max()) < 0.1
  assert float(y.min()) < 0.0
  bank = init(KEY, (3, 4, EMBED))
  assert bank.shape == (3, 4, EMBED)
  assert not np.allclose(bank[0], bank[1])


def test_sampled_vocab_draws_distinct_frequent_rows():
  init = initializers.sampled_vocab()
  x = init(KEY, (50, EMBED), numbered_table())
  ids = np.asarray(x[:, 0])
  np.testing.assert_array_equal(x, np.broadcast_to(ids[:, None], x.shape))
  assert ids.max() < 5000 and len(set(ids.tolist())) == 50
  np.testing.assert_array_equal(x, init(KEY, (50, EMBED), numbered_table()))
  assert not np.array_equal(
      x, init(jax.random.PRNGKey(1), (50, EMBED), numbered_table()))
  small = initializers.sampled_vocab(population=10)(KEY, (4, EMBED),
                                                     numbered_table())
  assert np.asarray(small).max() < 10
  with pytest.raises(ValueError, match="needs the token embedding"):
    init(KEY, (5, EMBED))
  with pytest.raises(ValueError, match=r"expected \[vocab, 8\]"):
    init(KEY, (5, EMBED), jnp.zeros((10, 3)))


def test_class_labels_average_label_tokens_then_sample(spiece):
  # Imported here: the data package loads TensorFlow.
  from prompt_tuning.data import super_glue  # pylint: disable=g-import-not-at-top
  labels = super_glue.label_strings("taskless_super_glue_cb_v102")
  assert labels == ("entailment", "contradiction", "neutral")
  table = jax.random.normal(KEY, (32128, EMBED))
  init = initializers.class_labels(labels, spiece)
  x = init(jax.random.PRNGKey(3), (10, EMBED), table)
  assert x.shape == (10, EMBED)
  for i, label in enumerate(labels):
    ids = spiece.encode(label)
    assert len(ids) >= 1
    np.testing.assert_allclose(x[i], table[np.asarray(ids)].mean(0),
                               atol=1e-6)
  # The rest are rows of the frequent vocabulary.
  numbered = initializers.class_labels(labels, spiece)(
      KEY, (10, EMBED), numbered_table(32128))
  assert np.all(np.asarray(numbered[3:, 0]) < 5000)
  np.testing.assert_array_equal(x, init(jax.random.PRNGKey(3), (10, EMBED),
                                        table))
  with pytest.raises(ValueError, match="3 class labels do not fit"):
    init(KEY, (2, EMBED), table)
  with pytest.raises(ValueError, match="at least one label"):
    initializers.class_labels((), spiece)


def test_from_string_embeds_text_and_rejects_long_text(spiece):
  text = "Classify the sentiment:"
  ids = spiece.encode(text)
  table = numbered_table(32128)
  x = initializers.from_string(text, spiece.encode)(KEY, (20, EMBED), table)
  np.testing.assert_array_equal(np.asarray(x[:len(ids), 0]), ids)
  assert np.all(np.asarray(x[len(ids):, 0]) < 5000)
  with pytest.raises(ValueError, match=r"tokens long, more than the prompt"):
    initializers.from_string(text, spiece)(KEY, (len(ids) - 1, EMBED), table)


def test_from_file_loads_the_authors_prompt(tmp_path):
  path = shared_path("fixtures", "prompts", "prompt_5x256.npy")
  expected = np.load(path)
  x = initializers.from_file(path)(KEY, (5, 256))
  assert x.dtype == jnp.float32
  np.testing.assert_allclose(x, expected.astype(np.float32))
  bank = initializers.from_file(path)(KEY, (2, 5, 256))
  np.testing.assert_allclose(bank[1], expected.astype(np.float32))
  with pytest.raises(ValueError,
                     match=r"shape \[5, 256\], expected \[6, 256\]"):
    initializers.from_file(path)(KEY, (6, 256))
  with pytest.raises(ValueError, match=r"expected \[5, 512\]"):
    initializers.from_file(path)(KEY, (5, 512))
  width = _config().emb_dim
  np.save(tmp_path / "p.npy", np.ones((3, width)))
  model = EncoderDecoderModel(PromptTransformer(
      _config(), prompt_length=3,
      prompt_init=initializers.from_file(tmp_path / "p.npy")))
  params = nn.unbox(model.init(KEY, 6, 3))["params"]
  np.testing.assert_array_equal(params["prompt"]["prompt"],
                                np.ones((3, width)))


def _config():
  # More rows than `sampled_vocab`'s population (5000).
  return tiny_config(vocab_size=VOCAB, num_encoder_layers=1,
                     num_decoder_layers=1)


def test_initialize_prompt_redraws_from_the_loaded_table():
  model = EncoderDecoderModel(PromptTransformer(
      _config(), prompt_length=6, prompt_init=initializers.sampled_vocab()))
  params = nn.unbox(model.init(KEY, 6, 3))["params"]
  # At init the sampled rows come from the model's own (random) table.
  table = params["token_embedder"]["embedding"]
  rows = np.asarray(params["prompt"]["prompt"])
  assert all(np.any(np.all(np.isclose(table, r), axis=1)) for r in rows)
  # "Load" a pretrained table and redraw the prompt from it.
  loaded = dict(params, token_embedder={
      "embedding": numbered_table(VOCAB, _config().emb_dim)})
  new = initializers.initialize_prompt(loaded, model.module.prompt_init, KEY)
  ids = np.asarray(new["prompt"]["prompt"][:, 0])
  assert ids.max() < 5000 and len(set(ids.tolist())) == 6
  assert new["token_embedder"] is not None
  np.testing.assert_array_equal(new["token_embedder"]["embedding"],
                                loaded["token_embedder"]["embedding"])
  np.testing.assert_array_equal(
      new["prompt"]["prompt"],
      initializers.initialize_prompt(loaded, model.module.prompt_init,
                                     KEY)["prompt"]["prompt"])


def _gin_model(files, bindings=()):
  gin_utils.parse_gin(files, bindings)
  return gin_utils.configured_model()


def test_gin_prompt_model_over_tiny_t5(clean_gin):
  model = _gin_model(["models/t5_1_1_tiny.gin", "prompts/prompt.gin"],
                     ["PROMPT_LENGTH = 3"])
  assert isinstance(model.module, PromptTransformer)
  assert model.module.config.emb_dim == 4
  assert model.module.config.mlp_activations == ("gelu", "linear")
  params = nn.unbox(model.init(KEY, 6, 3))["params"]
  prompt = params["prompt"]["prompt"]
  assert prompt.shape == (3, 4)
  assert float(prompt.min()) >= 0.0 and float(prompt.max()) < 0.5
  batch = {"encoder_input_tokens": jnp.array([[5, 6, 7, 1, 0, 0]]),
           "decoder_input_tokens": jnp.array([[0, 8, 9]]),
           "decoder_target_tokens": jnp.array([[8, 9, 1]])}
  assert model.logits(params, batch).shape == (1, 3, 32128)


@pytest.mark.parametrize("gin_file,bindings,check", [
    ("prompts/random_uniform.gin", ["PROMPT_INIT_SYMMETRIC = True"],
     lambda p: float(p.min()) < 0.0),
    ("prompts/from_sampled_vocab.gin", [], lambda p: True),
    ("prompts/from_file.gin", [], lambda p: np.allclose(
        p, np.load(shared_path("fixtures", "prompts", "prompt_5x256.npy")))),
])
def test_gin_initialiser_files(clean_gin, gin_file, bindings, check):
  prompt_file = shared_path("fixtures", "prompts", "prompt_5x256.npy")
  model = _gin_model(
      ["models/t5_1_1_tiny.gin", gin_file],
      ["PROMPT_LENGTH = 5", f"PROMPT_FILE = '{prompt_file}'"] + bindings
      + (["t5_config.T5Config.emb_dim = 256"]
         if "from_file" in gin_file else []))
  shapes = model.param_shapes(4, 2)
  assert shapes["prompt"]["prompt"].shape == (5, model.module.config.emb_dim)
  # Initialise only the prompt from a stand-in for the pretrained table.
  table = jax.random.normal(KEY, (32128, model.module.config.emb_dim))
  prompt = model.module.prompt_init(KEY, (5, model.module.config.emb_dim),
                                    table)
  assert check(np.asarray(prompt))


def test_gin_class_label_file(clean_gin, monkeypatch):
  monkeypatch.setenv("PROMPT_TUNING_VOCAB",
                     str(shared_path(*locations.VOCAB_IN_SHARED)))
  model = _gin_model(
      ["models/t5_1_1_tiny.gin", "prompts/from_class_labels.gin"],
      ["PROMPT_LENGTH = 4", "CLASS_LABELS = ('entailment', 'not_entailment')"])
  table = jax.random.normal(KEY, (32128, 4))
  prompt = model.module.prompt_init(KEY, (4, 4), table)
  ids = sentencepiece.SentencePieceProcessor(
      model_file=str(shared_path(*locations.VOCAB_IN_SHARED))
  ).encode("not_entailment")
  np.testing.assert_allclose(prompt[1], table[np.asarray(ids)].mean(0),
                             atol=1e-6)
