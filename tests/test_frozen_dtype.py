"""FROZEN_DTYPE (`run_settings.PartitioningConfig.frozen_dtype`): the frozen
model stored in bfloat16 (half its memory) while the prompt, its gradient
and Adafactor's state stay float32; the loss stays close to float32's on the
tiny test model and on the shipped mini T5; checkpoints are unaffected; the
trainer accepts it (with the memory plan's other levers) and refuses what
would write bfloat16 checkpoints."""

import contextlib
import io

import gin
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import initial_params, prompt_run_flags, shared_path, tiny_model
from helpers import training_batch
from prompt_tuning import errors
from prompt_tuning import main_job
from prompt_tuning import plan as plan_cli
from prompt_tuning import train
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts.models import PromptTransformer
from prompt_tuning.recipes import frozen_model
from prompt_tuning.training import optimizers
from prompt_tuning.training import run_settings
from prompt_tuning.training import steps
from prompt_tuning.training.train_state import create_train_state

# bfloat16 keeps 8 mantissa bits: each weight is rounded by up to 2^-9
# relative; the summed loss moves by well under 1% (measured: 0.05% on the
# tiny model, 0.02% on the mini T5 with random tokens).
LOSS_RTOL = 1e-2


def _state(model, params, frozen_dtype):
  split = freezing.compute_split(params, model.trainable_patterns)
  return create_train_state(params, split, optimizers.adafactor(),
                            frozen_dtype=frozen_dtype)


def _bytes(tree) -> int:
  return sum(x.nbytes for x in jax.tree_util.tree_leaves(tree))


def _compare(model, params, batch):
  """(float32 loss, bfloat16-frozen loss), checking dtypes and memory."""
  f32 = _state(model, params, run_settings.DEFAULT_FROZEN_DTYPE)
  bf16 = _state(model, params, "bfloat16")
  for leaf in jax.tree_util.tree_leaves(bf16.frozen):
    assert leaf.dtype == jnp.bfloat16
  assert _bytes(bf16.frozen) * 2 == _bytes(f32.frozen)
  for tree in (bf16.trainable, bf16.opt_state):
    for leaf in jax.tree_util.tree_leaves(tree):
      assert leaf.dtype != jnp.bfloat16
  assert _bytes(bf16.trainable) == _bytes(f32.trainable)
  assert _bytes(bf16.opt_state) == _bytes(f32.opt_state)

  def loss(state):
    value = jax.jit(lambda s, b: model.loss_fn(s.params, b, None)[0])(
        state, batch)
    grads, _ = jax.jit(lambda s, b: steps.trainable_gradients(
        model.loss_fn, s, b, None, 1))(state, batch)
    for leaf in jax.tree_util.tree_leaves(grads):
      assert leaf.dtype == jnp.float32  # The prompt's gradient.
    return float(value)
  return loss(f32), loss(bf16)


def test_tiny_model_loss_close_to_float32():
  model = tiny_model("prompt")
  ref, ours = _compare(model, initial_params(model), training_batch())
  assert ours != ref  # Really computed from rounded weights.
  np.testing.assert_allclose(ours, ref, rtol=LOSS_RTOL)


def test_mini_t5_loss_close_to_float32():
  config = main_job.model_config(frozen_model.MODEL_GIN)
  model = EncoderDecoderModel(PromptTransformer(config, prompt_length=10))
  found = sorted(shared_path(*frozen_model.SHIPPED_DIR.split("/")).glob(
      "checkpoint_*"))
  assert found, "the shared folder ships no frozen mini T5"
  lengths = {"inputs": 32, "targets": 4}
  params = initial_params(model, lengths=lengths, checkpoint=str(found[-1]))
  batch = training_batch(batch=4, length=32, targets=4,
                         vocab_size=config.vocab_size)
  ref, ours = _compare(model, params, batch)
  assert ours != ref
  np.testing.assert_allclose(ours, ref, rtol=LOSS_RTOL)


@pytest.fixture
def _clean(local_super_glue):
  yield local_super_glue
  gin.clear_config()


def _xxl_suggestion() -> list[str]:
  """The `--gin.` flags `plan --suggest` names cheapest for T5 1.1-XXL on
  4x8 @ 16 GiB with the paper's batch and lengths."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert plan_cli.main([
        "--gin_file=models/t5_1_1_xxl.gin", "--gin_file=prompts/prompt.gin",
        "--gin.PROMPT_LENGTH=100", "--mesh=4x8", "--batch_size=32",
        "--inputs_length=512", "--targets_length=8", "--device_memory=16GiB",
        "--suggest"]) == 0
  gin.clear_config()
  line = [l for l in out.getvalue().splitlines()
          if l.startswith("Cheapest: ")]
  assert len(line) == 1, out.getvalue()
  return line[0][len("Cheapest: "):].replace('"', "").split()


@pytest.mark.parametrize("levers", [
    "xxl_suggestion",
    ("--gin.FROZEN_DTYPE='bfloat16'", "--gin.ACTIVATION_DTYPE='bfloat16'",
     "--gin.REMAT_POLICY='full'", "--gin.NUM_MICROBATCHES=2")])
def test_train_accepts_the_plans_settings(tmp_path, _clean, levers):
  """A short run of the tiny model with the settings `plan --suggest` gives
  XXL on 4x8 @ 16 GiB, and with every lever moved (bfloat16 frozen weights
  and activations, 'full' remat, microbatches): each trains, and its
  checkpoint holds the float32 prompt and optimizer state only."""
  levers = _xxl_suggestion() if levers == "xxl_suggestion" else levers
  model_dir = tmp_path / "run"
  args = prompt_run_flags(model_dir, *levers, batch_size=16, train_steps=2)
  assert train.main(args) == 0
  # The checkpoint holds the step, the prompt and Adafactor's state, all
  # float32 (no frozen parameters, no bfloat16).
  saved = ocp.PyTreeCheckpointer().metadata(
      model_dir / "checkpoints" / "2" / "state")
  saved = getattr(saved, "item_metadata", saved)
  saved = getattr(saved, "tree", saved)
  assert set(saved) == {"step", "trainable", "opt_state"}, set(saved)
  dtypes = {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(
      {k: saved[k] for k in ("trainable", "opt_state")})
            if hasattr(leaf, "dtype")}
  assert "bfloat16" not in dtypes and "float32" in dtypes, dtypes


@pytest.mark.parametrize("override, match", [
    ("--gin.FROZEN_DTYPE='float16'",
     r"FROZEN_DTYPE must be one of \('float32', 'bfloat16'\)"),
    ("--gin.run_settings.CheckpointConfig.save_frozen=True",
     "FROZEN_DTYPE='bfloat16' would write the frozen parameters in bfloat16"),
    ("--gin.run_settings.CheckpointConfig.export_t5x=True",
     "FROZEN_DTYPE='bfloat16' would write the frozen parameters in bfloat16"),
])
def test_bad_frozen_dtype_is_refused_before_loading(tmp_path, _clean,
                                                    override, match):
  args = prompt_run_flags(tmp_path / "run", "--gin.FROZEN_DTYPE='bfloat16'",
                          override)
  with pytest.raises(errors.ConfigError, match=match):
    train.main(args)
  assert not (tmp_path / "run").exists()
