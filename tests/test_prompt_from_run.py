"""A soft prompt started from another run (`prompts/from_run.gin`, issue 31):
the new model's initial prompt is exactly the source run's (its latest
step, a given step, its `best/`), for one prompt and for a bank, and a
prompt that does not fit is refused by the preflight, before any weights or
arrays are read, naming the run, the shapes and the fix."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import T5X_TINY, initial_params, prompt_run_flags, shared_path
from prompt_tuning import errors
from prompt_tuning import gin_utils
from prompt_tuning import train
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import prompt_names
from prompt_tuning.checkpoints import run_checkpoints
from prompt_tuning.prompts import initializers
from prompt_tuning.training import checkpointer as ckpt
from prompt_tuning.training import state
from prompt_tuning.training.train_state import TrainState

LENGTH, EMBED = 3, 4  # models/t5_1_1_tiny.gin's width.
FROZEN_RECORD = {"path": None, "fingerprint": None, "shapes": {}}


def _prompt(seed: int, shape=(LENGTH, EMBED)) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _write_run(model_dir, prompts, subdir=run_checkpoints.CHECKPOINTS):
  """A run's checkpoints as the trainer writes them: `{step: prompt}`."""
  checkpoints = ckpt.TrainCheckpointer(str(model_dir), subdir=subdir)
  for step, prompt in prompts.items():
    trainable = {"prompt": {"prompt": jnp.asarray(prompt)}}
    checkpoints.save(
        TrainState(step=jnp.int32(step), trainable=trainable, frozen={},
                   opt_state=optax.adafactor(1e-3).init(trainable)),
        data_position=step, frozen_record=FROZEN_RECORD,
        trainable_patterns=[prompt_names.SOFT_PROMPT])
  checkpoints.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A run with steps 1, 2 and best/1 (each prompt distinct), and a run of
  a bank of 2 prompts."""
  root = tmp_path_factory.mktemp("from_run")
  single = {1: _prompt(1), 2: _prompt(2)}
  _write_run(root / "single", single)
  best = {1: _prompt(3)}
  _write_run(root / "single", best, run_checkpoints.BEST)
  bank = {5: _prompt(4, (2, LENGTH, EMBED))}
  _write_run(root / "bank", bank)
  return {"dir": root, "single": single, "best": best, "bank": bank}


def _initial_prompt(model_dir, *bindings: str) -> np.ndarray:
  """The initial prompt of a tiny model built from gin with from_run.gin,
  on the frozen T5X tiny checkpoint (as a training run starts)."""
  gin.clear_config()
  try:
    gin_utils.parse_gin(
        ["models/t5_1_1_tiny.gin", "prompts/from_run.gin"],
        [f"PROMPT_LENGTH = {LENGTH}", f"PROMPT_RUN = {str(model_dir)!r}",
         *bindings])
    model = gin_utils.configured_model()
  finally:
    gin.clear_config()
  params = initial_params(model, checkpoint=str(shared_path(*T5X_TINY)))
  return np.asarray(param_tree.flatten_params(params)[
      prompt_names.SOFT_PROMPT])


def test_latest_step_and_best_are_restored_exactly(runs):
  run = runs["dir"] / "single"
  np.testing.assert_array_equal(_initial_prompt(run), runs["single"][2])
  np.testing.assert_array_equal(
      _initial_prompt(run, "PROMPT_RUN_STEP = 1"), runs["single"][1])
  np.testing.assert_array_equal(
      _initial_prompt(run, "PROMPT_RUN_BEST = True"), runs["best"][1])


def test_a_bank_starts_from_a_bank_or_from_one_prompt(runs):
  bank = runs["bank"][5]
  np.testing.assert_array_equal(
      _initial_prompt(runs["dir"] / "bank", "NUM_PROMPTS = 2"), bank)
  copied = _initial_prompt(runs["dir"] / "single", "NUM_PROMPTS = 2")
  np.testing.assert_array_equal(copied, np.stack([runs["single"][2]] * 2))
  with pytest.raises(errors.ConfigError) as e:
    initializers.from_run(runs["dir"] / "bank").check((LENGTH, EMBED))
  message = str(e.value)
  assert "bank" in message and "its checkpoints/5" in message
  assert "[2, 3, 4]" in message and "expected [3, 4]" in message
  assert "NUM_PROMPTS = 2" in message


def test_misfits_are_refused_from_metadata_naming_run_and_fix(runs,
                                                              monkeypatch):
  def no_read(*args, **kwargs):
    raise AssertionError("an array was read before the check refused")

  monkeypatch.setattr(run_checkpoints, "read_trainable", no_read)
  run = runs["dir"] / "single"
  init = initializers.from_run(run)
  with pytest.raises(errors.ConfigError) as e:
    init(jax.random.PRNGKey(0), (LENGTH, 8))
  message = str(e.value)
  assert f"PROMPT_RUN {run} (its checkpoints/2)" in message
  assert "[3, 4], expected [3, 8]" in message and "4 wide" in message
  with pytest.raises(errors.ConfigError,
                     match=r"step 7 .*have \[1, 2\]\. Set PROMPT_RUN_STEP"):
    initializers.from_run(run, step=7).check((LENGTH, EMBED))
  with pytest.raises(errors.ConfigError, match="BEST_METRIC"):
    initializers.from_run(runs["dir"] / "bank", best=True).check(
        (LENGTH, EMBED))
  with pytest.raises(errors.ConfigError,
                     match="MODEL_DIR, not its checkpoints/"):
    initializers.from_run(run / "checkpoints").check((LENGTH, EMBED))


def test_wrong_length_is_refused_by_the_preflight(runs, tmp_path,
                                                  local_super_glue,
                                                  monkeypatch):
  def no_load(*args, **kwargs):
    raise AssertionError("weights were loaded before the check refused")

  monkeypatch.setattr(state, "build_train_state", no_load)
  monkeypatch.setattr(run_checkpoints, "read_trainable", no_load)
  run = runs["dir"] / "single"
  with pytest.raises(errors.ConfigError) as e:
    train.main(prompt_run_flags(
        tmp_path / "new", f"--gin.PROMPT_RUN='{run}'",
        prompt="prompts/from_run.gin", prompt_length=5))
  gin.clear_config()
  message = str(e.value)
  assert f"PROMPT_RUN {run}" in message
  assert "[3, 4], expected [5, 4]" in message
  assert "PROMPT_LENGTH = 3" in message
  assert not (tmp_path / "new").exists()


def test_a_trained_run_starts_the_next_run(tmp_path, local_super_glue):
  """End to end through `prompt_tuning.train`: a 2-step run, then a run
  started from it that keeps its initial prompt (learning rate 1e-30, whose
  updates float32 rounds away, and no weight decay)."""
  source, target = tmp_path / "source", tmp_path / "target"
  try:
    assert train.main(prompt_run_flags(source, train_steps=2)) == 0
    gin.clear_config()
    trained, _ = run_checkpoints.read_trainable(source)
    assert train.main(prompt_run_flags(
        target, f"--gin.PROMPT_RUN='{source}'", "--gin.LEARNING_RATE=1e-30",
        "--gin.optimizers.adafactor.weight_decay_rate=None",
        prompt="prompts/from_run.gin", train_steps=2)) == 0
  finally:
    gin.clear_config()
  started, _ = run_checkpoints.read_trainable(target)
  np.testing.assert_array_equal(started[prompt_names.SOFT_PROMPT],
                                trained[prompt_names.SOFT_PROMPT])
