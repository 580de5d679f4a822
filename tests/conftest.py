"""Shared pytest fixtures.

Real files (SuperGLUE jsonl, the T5 vocabulary, a T5X checkpoint, prompts
trained by the paper's authors) live in `../shared` beside the project root.
`shared_dir()` is the only way tests find them; set `PROMPT_TUNING_SHARED` to
point elsewhere. A missing directory fails the test loudly: it is never a skip.
"""

import os
import pathlib

# Eight virtual CPU devices for the partitioning tests; must precede any jax
# import. Single-device code simply runs on the first one.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # Tests are CPU-only.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from prompt_tuning.data import locations  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTDATA = pathlib.Path(__file__).resolve().parent / "testdata"


def shared_dir() -> pathlib.Path:
  """Returns the shared test-file directory, failing loudly if absent."""
  return locations.shared_dir()


def shared_path(*parts: str) -> pathlib.Path:
  """Returns `shared_dir()/parts...`, failing loudly if it does not exist."""
  return locations.shared_path(*parts)


@pytest.fixture
def shared():
  return shared_dir()


def load_script(name: str):
  """Imports `scripts/<name>.py` as a module (scripts are not a package)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      name, REPO_ROOT / "scripts" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def local_super_glue(monkeypatch) -> dict[str, str]:
  """Points the SuperGLUE tasks and the T5 vocabulary at ../shared."""
  env = {
      "PROMPT_TUNING_SUPER_GLUE_DIR": str(shared_path("data", "super_glue")),
      "PROMPT_TUNING_VOCAB": str(shared_path("models", "t5_vocab",
                                             "spiece.model")),
  }
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  return env


def random_batch(vocab_size: int, batch: int = 3, inputs: int = 10,
                 targets: int = 6, seed: int = 1) -> dict:
  """A seq2seq batch of random ids >= 2: input row 1 ends in 3 padding
  positions, target row 0 in 2; decoder inputs are targets shifted right."""
  import jax  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS above)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  enc = jax.random.randint(k1, (batch, inputs), 2, vocab_size)
  enc = enc.at[1, inputs - 3:].set(0)
  tgt = jax.random.randint(k2, (batch, targets), 2, vocab_size)
  tgt = tgt.at[0, targets - 2:].set(0)
  dec = jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), tgt[:, :-1]], 1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt}


def initial_params(model, rng=None, lengths=None, checkpoint=None,
                   patterns=None):
  """`training.state.initial_params` on one device, as host arrays: the
  model's declared (or `patterns`') trainable set, random init (or the
  frozen base from `checkpoint`)."""
  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS above)
  import jax
  from prompt_tuning import partitioning
  from prompt_tuning.prompts import freezing
  from prompt_tuning.training import state
  # pylint: enable=g-import-not-at-top
  lengths = lengths or {"inputs": 1, "targets": 1}
  boxed = state.model_shapes(model, lengths)
  split = freezing.compute_split(boxed, patterns or model.trainable_patterns)
  mesh = partitioning.create_mesh(mesh_shape=(1, 1), devices=jax.devices()[:1])
  initial = state.initial_params(model, boxed, mesh, checkpoint, split,
                                 jax.random.PRNGKey(0) if rng is None else rng)
  return jax.device_get(initial.params)


# A small model with dropout, in both prompt kinds, for tests that compare
# two settings of one model config (`test_remat.py`,
# `test_attention_layout.py`): same parameters, same loss and gradients.
def small_dropout_model(kind: str, **config_overrides):
  """`EncoderDecoderModel` of a 2+2-layer T5 with dropout 0.1: `kind`
  'prompt' (a 4-position soft prompt) or 'deep' (P-Tuning v2, 3-position
  prefixes in every encoder and decoder layer)."""
  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS above)
  from prompt_tuning.models import T5Config
  from prompt_tuning.models.model import EncoderDecoderModel
  from prompt_tuning.prompts import deep
  from prompt_tuning.prompts.models import PromptTransformer
  # pylint: enable=g-import-not-at-top
  config = T5Config(vocab_size=128, emb_dim=32, num_heads=2, head_dim=8,
                    mlp_dim=48, num_encoder_layers=2, num_decoder_layers=2,
                    dropout_rate=0.1, **config_overrides)
  if kind == "prompt":
    return EncoderDecoderModel(PromptTransformer(config, prompt_length=4))
  return EncoderDecoderModel(deep.DeepPromptTransformer(
      config, prefix_length=3, decoder_prompt=True))


def training_batch(batch=3, length=12, targets=5, seed=0):
  """Random int32 model features with padding in one input row and one
  target row, loss weights on the real targets."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, 128, (batch, length)).astype(np.int32)
  enc[0, 8:] = 0
  tgt = rng.integers(2, 128, (batch, targets)).astype(np.int32)
  tgt[1, 3:] = 0
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt,
          "decoder_loss_weights": (tgt > 0).astype(np.int32)}


def assert_same_loss_and_gradients(reference, model, params, batch, *,
                                   rtol: float, grad_rtol: float,
                                   grad_atol: float = 1e-6) -> None:
  """`model` has `reference`'s parameter tree and, on `params` and `batch`
  with dropout on (the same key), its loss and every parameter's gradient
  (the frozen weights' too) to the given tolerances."""
  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS above)
  import jax
  import numpy as np
  # pylint: enable=g-import-not-at-top
  assert jax.tree_util.tree_structure(initial_params(model)) == (
      jax.tree_util.tree_structure(params))

  def loss_and_grads(m):
    return jax.jit(jax.value_and_grad(
        lambda p: m.loss_fn(p, batch, jax.random.PRNGKey(7))[0]))(params)
  loss, grads = loss_and_grads(reference)
  other_loss, other_grads = loss_and_grads(model)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(other_loss, loss, rtol=rtol)
  other = dict(jax.tree_util.tree_leaves_with_path(other_grads))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    np.testing.assert_allclose(other[path], g, rtol=grad_rtol,
                               atol=grad_atol,
                               err_msg=jax.tree_util.keystr(path))
