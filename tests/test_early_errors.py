"""Early, clear errors (issue 28): sizes that cannot fit, bad prompt files and
unwritable output directories are refused by the preflight checks, before
any weight is read, naming the setting or file and the fix, and nothing is
written.

Each probe runs a command (`train.main`, `evaluate.main`, `infer.main`)
in-process on the README's main job (the T5X-written tiny checkpoint, real
RTE files, the real vocabulary) with one thing wrong, with the weight
loaders replaced by ones that fail the test if called.
"""

import os
import pathlib
import pickle
import time

import gin
import jax
import numpy as np
import pytest

from helpers import (RTE, T5X_TINY, prompt_run_flags, shared_path,
                     tiny_model)
from prompt_tuning import errors
from prompt_tuning import evaluate
from prompt_tuning import infer
from prompt_tuning import partitioning
from prompt_tuning import train
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import original_prompts
from prompt_tuning.prompts import initializers
from prompt_tuning.training import capacity
from prompt_tuning.training import distributed
from prompt_tuning.training import preflight
from prompt_tuning.training import state


@pytest.fixture(autouse=True)
def _local_data_no_weights(local_super_glue, monkeypatch):
  """Real data and vocabulary; any weight load fails the test."""

  def no_load(*args, **kwargs):
    raise AssertionError("weights were loaded before the check refused")

  monkeypatch.setattr(state, "build_train_state", no_load)
  monkeypatch.setattr(state, "load_trained_params", no_load)
  yield
  gin.clear_config()


def snapshot(path: pathlib.Path) -> dict[str, tuple[int, int]]:
  """Every file under `path` with its size and modification time."""
  return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in path.rglob("*")}


def refused(command, args, tmp_path, match):
  """Runs `command(args)`: a ConfigError matching `match` within seconds,
  tmp_path (inputs aside) and the working directory unchanged."""
  before, cwd = snapshot(tmp_path), sorted(os.listdir("."))
  start = time.time()
  with pytest.raises(errors.ConfigError, match=match) as info:
    command(args)
  elapsed = time.time() - start
  gin.clear_config()
  assert snapshot(tmp_path) == before
  assert sorted(os.listdir(".")) == cwd
  assert elapsed < 15, f"took {elapsed:.0f}s"
  return str(info.value)


def test_g8_batch_size_beyond_memory_is_refused(tmp_path):
  message = refused(train.main, prompt_run_flags(
      tmp_path / "run", "--gin.BATCH_SIZE=1000000000"), tmp_path,
                    r"cannot fit in memory: BATCH_SIZE=1000000000")
  for part in ("per device by the memory plan", "TiB", "RAM",
               "Lower BATCH_SIZE", "NUM_MICROBATCHES", "REMAT_POLICY",
               "larger mesh", "prompt_tuning.plan", "--suggest"):
    assert part in message, (part, message)
  assert not (tmp_path / "run").exists()


def test_g8_the_feed_does_not_scale_with_the_batch():
  mesh = partitioning.create_mesh(1)
  start = time.time()
  feed = distributed.batch_feed(partitioning.batch_sharding(mesh), 10**9)
  assert feed.rows == (0, 10**9) and feed.shard_info is None
  assert time.time() - start < 1


def test_g8_sizes_that_fit_are_not_refused(tmp_path):
  # The tiny run's step, and one a thousand times its batch (still small).
  for batch in ("8", "8000"):
    assert train.main(prompt_run_flags(
        tmp_path / "run", f"--gin.BATCH_SIZE={batch}", "--validate_only")) == 0
    gin.clear_config()
  assert not (tmp_path / "run").exists()


def test_g8_an_accelerator_is_checked_per_device():
  model_args = _tiny_model_args()
  limit = capacity.Capacity(2**30, 1, "each GPU device's 1.00 GiB")
  capacity.check_step_fits(**model_args, batch_size=8, capacity=limit)
  with pytest.raises(errors.ConfigError,
                     match=r"BATCH_SIZE=80000000 .*each GPU device's"):
    capacity.check_step_fits(**model_args, batch_size=80_000_000,
                             capacity=limit)


def _tiny_model_args():
  """`check_step_fits`'s arguments for the tiny prompt model (no batch)."""
  model = tiny_model("prompt", prompt_length=3)
  return dict(model=model, boxed_params=model.init_shapes(64, 8)["params"],
              trainable_patterns=model.trainable_patterns,
              mesh=partitioning.create_mesh(1),
              lengths={"inputs": 64, "targets": 8}, num_microbatches=1,
              frozen_dtype="float32")


def test_g19_prompt_length_beyond_memory_is_refused(tmp_path):
  message = refused(train.main, prompt_run_flags(
      tmp_path / "run", prompt_length=10**7), tmp_path,
                    r"cannot fit in memory: PROMPT_LENGTH=10000000")
  assert "TiB" in message and "Lower PROMPT_LENGTH" in message
  assert "prompt_tuning.plan" in message
  assert not (tmp_path / "run").exists()


def test_g11_non_finite_prompt_file_is_refused_when_read(tmp_path):
  prompt = np.zeros((3, 4), np.float32)
  prompt[1, 2] = np.nan
  prompt[2, 0] = np.inf
  path = tmp_path / "prompt.npy"
  np.save(path, prompt)
  message = refused(train.main, prompt_run_flags(
      tmp_path / "run", f"--gin.PROMPT_FILE='{path}'",
      prompt="prompts/from_file.gin"), tmp_path,
                    rf"Prompt file {path} holds 2 non-finite value")
  assert "first at index [1, 2]" in message
  assert "finite values" in message and "np.save" in message
  assert "LEARNING_RATE" not in message
  assert not (tmp_path / "run").exists()
  # A prompt read from a T5X prompt run (here one of its files) alike.
  init = initializers.from_t5x_run(path)
  with pytest.raises(errors.ConfigError, match=r"2 non-finite .*\[1, 2\]"):
    init(jax.random.PRNGKey(0), (3, 4))


def test_g17_a_file_that_is_no_npy_is_named_without_pickle_advice(tmp_path):
  text = tmp_path / "prompt.txt"
  text.write_text("not an array")
  message = refused(train.main, prompt_run_flags(
      tmp_path / "run", f"--gin.PROMPT_FILE='{text}'",
      prompt="prompts/from_file.gin"), tmp_path,
                    rf"Prompt file {text} is not a readable .npy array")
  assert "np.save" in message and ".npy header" in message
  assert not (tmp_path / "run").exists()
  pickled = tmp_path / "pickled.npy"
  pickled.write_bytes(pickle.dumps([1.0, 2.0]))
  objects = tmp_path / "objects.npy"
  np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
  archive = tmp_path / "prompt.npz"
  np.savez(archive, prompt=np.zeros((3, 4)))
  for path, why in ((text, "header"), (pickled, "header"),
                    (objects, "Python objects"), (archive, "zip archive")):
    messages = []
    for read in (initializers.load_npy, prompt_io.load_prompt,
                 original_prompts.read_npy):
      with pytest.raises(ValueError) as info:
        read(path)
      messages.append(str(info.value))
    for message in messages:
      assert str(path) in message and why in message, message
      assert "np.save" in message, message
      assert "allow_pickle" not in message and "unsafe" not in message


def _eval_flags(model_dir, *overrides, run="runs/prompt_eval.gin"):
  return ["--gin_file=models/t5_1_1_tiny.gin",
          "--gin_file=prompts/prompt.gin", f"--gin_file={run}",
          f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.MIXTURE_OR_TASK_NAME='{RTE}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path(*T5X_TINY)}'",
          "--gin.PROMPT_LENGTH=3",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}",
          *overrides]


def test_g13_unwritable_output_directories_are_refused(tmp_path,
                                                       monkeypatch):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  # A trained run (its checkpoint is never read: the check comes first) in
  # a read-only directory.
  monkeypatch.setattr(preflight.train_ckpt, "has_checkpoint",
                      lambda *args, **kwargs: True)
  real_access = os.access

  def access(path, mode, **kwargs):
    if (mode & os.W_OK and
        os.path.abspath(path).startswith(str(model_dir))):
      return False
    return real_access(path, mode, **kwargs)

  monkeypatch.setattr(os, "access", access)
  for flags in ([], ["--validate_only"]):
    message = refused(evaluate.main, _eval_flags(model_dir, *flags),
                      tmp_path, r"EVAL_OUTPUT_DIR: the output directory "
                      rf"{model_dir}/eval cannot be created: {model_dir} "
                      "is not writable")
    assert "--gin.EVAL_OUTPUT_DIR=" in message
  message = refused(infer.main, _eval_flags(
      model_dir, "--gin.INFER_SPLIT='validation'",
      run="runs/prompt_infer.gin"), tmp_path,
                    rf"INFER_OUTPUT_DIR: the output directory {model_dir}"
                    "/infer cannot be created")
  assert "--gin.INFER_OUTPUT_DIR=" in message
  # An output directory under a file.
  blocker = tmp_path / "file"
  blocker.write_text("")
  refused(evaluate.main, _eval_flags(
      model_dir, f"--gin.EVAL_OUTPUT_DIR='{blocker}/eval'"), tmp_path,
          f"EVAL_OUTPUT_DIR: the output directory {blocker}/eval cannot be "
          f"created: {blocker} is a file")
  # A writable EVAL_OUTPUT_DIR passes the check (then the stubbed loader).
  with pytest.raises(AssertionError, match="weights were loaded"):
    evaluate.main(_eval_flags(
        model_dir, f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'out'}'"))
  assert not (tmp_path / "out").exists()
