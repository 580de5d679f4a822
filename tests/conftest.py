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

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTDATA = pathlib.Path(__file__).resolve().parent / "testdata"


def shared_dir() -> pathlib.Path:
  """Returns the shared test-file directory, failing loudly if absent."""
  path = pathlib.Path(
      os.environ.get("PROMPT_TUNING_SHARED", REPO_ROOT.parent / "shared"))
  if not path.is_dir():
    raise FileNotFoundError(
        f"Shared test files not found at {path}. Put the project's shared/ "
        "folder beside the repository root or set PROMPT_TUNING_SHARED.")
  return path


def shared_path(*parts: str) -> pathlib.Path:
  """Returns `shared_dir()/parts...`, failing loudly if it does not exist."""
  path = shared_dir().joinpath(*parts)
  if not path.exists():
    raise FileNotFoundError(f"Expected shared test file {path} is missing.")
  return path


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
