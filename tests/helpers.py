"""Plain helpers and constants shared by the tests (`from helpers import ...`).

Pytest fixtures and the environment the tests run in (eight virtual CPU
devices, no GPU) are `conftest.py`'s: pytest imports it before any test
module, so its environment settings precede the jax import below. The
`tests/` directory is on `sys.path` because `conftest.py` sits in it
(pytest's default 'prepend' import mode), from any working directory.

Real files (SuperGLUE jsonl, the T5 vocabulary, a T5X checkpoint, prompts
trained by the paper's authors) live in `../shared` beside the project root.
`shared_dir()` is the only way tests find them; set `PROMPT_TUNING_SHARED` to
point elsewhere. A missing directory fails the test loudly: it is never a skip.
"""

import dataclasses
import importlib.util
import os
import pathlib
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import main_job
from prompt_tuning import partitioning
from prompt_tuning.data import locations
from prompt_tuning.models import T5Config
from prompt_tuning.models import Transformer
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import deep
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts.models import PromptTransformer
from prompt_tuning.recipes import frozen_model
from prompt_tuning.training import run_settings
from prompt_tuning.training import state

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTDATA = pathlib.Path(__file__).resolve().parent / "testdata"

# Rows of the public T5 models' embedding (the T5 SentencePiece vocabulary
# and its sentinels): what a model reading real text through it needs.
T5_VOCAB_SIZE = T5Config.vocab_size

# RTE as the prompt runs train on it (no task prefix), and the T5X-written
# checkpoint of `models/t5_1_1_tiny.gin` under `shared_dir()`.
RTE = "taskless_super_glue_rte_v102"
T5X_TINY = ("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")
# Its model: T5 1.1 (gated GELU, separate logits) at the sizes
# `models/t5_1_1_tiny.gin` binds, with the public vocabulary's rows.
T5X_TINY_CONFIG = T5Config(emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8,
                           num_encoder_layers=2, num_decoder_layers=2,
                           relative_attention_num_buckets=4,
                           relative_attention_max_distance=8)


def shared_dir() -> pathlib.Path:
  """Returns the shared test-file directory, failing loudly if absent."""
  return locations.shared_dir()


def shared_path(*parts: str) -> pathlib.Path:
  """Returns `shared_dir()/parts...`, failing loudly if it does not exist."""
  return locations.shared_path(*parts)


def subprocess_env(data_env: dict[str, str], tmp_path: pathlib.Path,
                   devices: Optional[int] = None) -> dict[str, str]:
  """The environment of a test's command-line subprocess: its data
  locations, CPU only (`devices` host devices; None: XLA's default) and a
  persistent compilation cache in `tmp_path` that the test's later runs
  load instead of compiling (results are unaffected)."""
  return {**os.environ, **data_env, "JAX_PLATFORMS": "cpu",
          "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT),
          "XLA_FLAGS": ("" if devices is None else
                        f"--xla_force_host_platform_device_count={devices}"),
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def load_script(name: str):
  """Imports `scripts/<name>.py` as a module (scripts are not a package)."""
  spec = importlib.util.spec_from_file_location(
      name, REPO_ROOT / "scripts" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def rte_train_cfg(lengths, batch_size: int = 8,
                  **kwargs) -> run_settings.DatasetConfig:
  """`trainer.train`'s `train_dataset_cfg` for RTE's train split;
  `kwargs`: more `DatasetConfig` fields (length_buckets, ...)."""
  return run_settings.DatasetConfig(RTE, dict(lengths), "train", batch_size,
                                    **kwargs)


def prompt_run_flags(model_dir, *overrides: str,
                     prompt: str = "prompts/prompt.gin",
                     lengths=(("inputs", 64), ("targets", 8)),
                     train_steps: int = 4, batch_size: int = 8,
                     prompt_length=3, checkpoint_period: int = 2) -> list[str]:
  """`prompt_tuning.train`'s flags for the README's prompt run, small: the
  tiny T5 1.1 of `models/t5_1_1_tiny.gin` from the T5X-written fixture
  checkpoint, the `prompt` gin file (its PROMPT_LENGTH `prompt_length`; None
  binds none), `runs/prompt_finetune.gin` on RTE without evaluation, then
  `overrides`."""
  length_flag = ([f"--gin.PROMPT_LENGTH={prompt_length}"]
                 if prompt_length is not None else [])
  return [
      "--gin_file=models/t5_1_1_tiny.gin", f"--gin_file={prompt}",
      "--gin_file=runs/prompt_finetune.gin",
      f"--gin.MODEL_DIR='{model_dir}'",
      f"--gin.MIXTURE_OR_TASK_NAME='{RTE}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path(*T5X_TINY)}'",
      f"--gin.TASK_FEATURE_LENGTHS={dict(lengths)}",
      f"--gin.TRAIN_STEPS={train_steps}", f"--gin.BATCH_SIZE={batch_size}",
      *length_flag, "--gin.EVAL_PERIOD=0",
      f"--gin.CHECKPOINT_PERIOD={checkpoint_period}",
      "--gin.EVAL_MIXTURE_OR_TASK_NAME=None",
      "--gin.trainer.train.progress=False", *overrides]


# The tiny T5 of the tests: every size distinct, and emb_dim not
# num_heads * head_dim, so a transposed or mixed-up dimension fails on its
# shape instead of passing by coincidence. Ids up to 128 are tokens.
TINY_CONFIG = dict(vocab_size=128, emb_dim=8, num_heads=3, head_dim=5,
                   mlp_dim=12, num_encoder_layers=2, num_decoder_layers=2,
                   relative_attention_num_buckets=6,
                   relative_attention_max_distance=16)


def tiny_config(**overrides) -> T5Config:
  """`T5Config` of the tests' tiny T5 (`TINY_CONFIG`), with `overrides`."""
  return T5Config(**{**TINY_CONFIG, **overrides})


def tiny_model(kind: str = "prompt", *, prompt_length: int = 4,
               prefix_length: int = 3, **overrides) -> EncoderDecoderModel:
  """`EncoderDecoderModel` of `tiny_config(**overrides)`: `kind` 'plain'
  (T5 alone), 'prompt' (a `prompt_length` soft prompt) or 'deep' (P-Tuning
  v2: `prefix_length` prefixes in every encoder and decoder layer)."""
  config = tiny_config(**overrides)
  if kind == "plain":
    return EncoderDecoderModel(Transformer(config))
  if kind == "prompt":
    return EncoderDecoderModel(PromptTransformer(config,
                                                 prompt_length=prompt_length))
  if kind == "deep":
    return EncoderDecoderModel(deep.DeepPromptTransformer(
        config, prefix_length=prefix_length, decoder_prompt=True))
  raise ValueError(f"kind {kind!r}: use 'plain', 'prompt' or 'deep'.")


def mini_checkpoint() -> str:
  """The shipped frozen mini T5 (a pre-trained T5X checkpoint, ../shared)."""
  found = sorted(shared_path(*frozen_model.SHIPPED_DIR.split("/")).glob(
      "checkpoint_*"))
  assert found, "the shared folder ships no frozen mini T5"
  return str(found[-1])


def mini_model(prompt_length: int = 20, **overrides) -> EncoderDecoderModel:
  """The recipe's mini T5 (`models/t5_1_1_mini.gin`, whose weights
  `mini_checkpoint` holds) with a soft prompt; `overrides`: T5Config
  fields (attention_layout, dropout_rate, ...)."""
  config = dataclasses.replace(main_job.model_config(frozen_model.MODEL_GIN),
                               **overrides)
  return EncoderDecoderModel(PromptTransformer(config,
                                               prompt_length=prompt_length))


def random_batch(vocab_size: int, batch: int = 3, inputs: int = 10,
                 targets: int = 6, seed: int = 1) -> dict:
  """A seq2seq batch of random ids >= 2: input row 1 ends in 3 padding
  positions, target row 0 in 2; decoder inputs are targets shifted right."""
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
  lengths = lengths or {"inputs": 1, "targets": 1}
  boxed = state.model_shapes(model, lengths)
  split = freezing.compute_split(boxed, patterns or model.trainable_patterns)
  mesh = partitioning.create_mesh(mesh_shape=(1, 1), devices=jax.devices()[:1])
  initial = state.initial_params(model, boxed, mesh, checkpoint, split,
                                 jax.random.PRNGKey(0) if rng is None else rng)
  return jax.device_get(initial.params)


def training_batch(batch=3, length=12, targets=5, seed=0, vocab_size=128):
  """Random int32 model features with padding in one input row and one
  target row, loss weights on the real targets."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, vocab_size, (batch, length)).astype(np.int32)
  enc[0, 8:] = 0
  tgt = rng.integers(2, vocab_size, (batch, targets)).astype(np.int32)
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
  shapes = jax.tree_util.tree_map(lambda x: x.shape, model.param_shapes())
  assert shapes == jax.tree_util.tree_map(np.shape, params)

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
