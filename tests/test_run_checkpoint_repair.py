"""Run checkpoints repair themselves (issue 28): every saved array has a
checksum in `meta`, a resume falls back past a damaged newest step (moving
it aside, never deleting it) to the newest good one, and saving a step that
exists already (a re-run after a kill) is a no-op or a safe replacement."""

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import gin
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import REPO_ROOT, RTE, T5X_TINY, prompt_run_flags, shared_path
from test_multihost import _finish, _free_port
from prompt_tuning import train
from prompt_tuning.checkpoints import integrity
from prompt_tuning.checkpoints import run_checkpoints as layout
from prompt_tuning.training import checkpointer as ckpt
from prompt_tuning.training import run_dir
from prompt_tuning.training.train_state import TrainState

FROZEN_RECORD = {"path": None, "fingerprint": None,
                 "shapes": {"embedding": [5, 4]}}


def make_state(step: int, value: float) -> TrainState:
  """A small state: a prompt of `value`s, Adafactor's state, a frozen
  embedding."""
  trainable = {"prompt": {"prompt": jnp.full((3, 4), value, jnp.float32)}}
  return TrainState(step=jnp.int32(step), trainable=trainable,
                    frozen={"embedding": jnp.ones((5, 4), jnp.float32)},
                    opt_state=optax.adafactor(1e-3).init(trainable))


def save(checkpoints: ckpt.TrainCheckpointer, step: int, value: float,
         **kwargs) -> None:
  checkpoints.save(make_state(step, value), data_position=step,
                   frozen_record=FROZEN_RECORD, trainable_patterns=["prompt"],
                   **kwargs)


def files(path: pathlib.Path) -> dict[str, bytes]:
  """Every file under `path` with its bytes."""
  return {str(p.relative_to(path)): p.read_bytes()
          for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def run(tmp_path):
  """MODEL_DIR with checkpoints of steps 1, 2, 3 (prompt values = step)."""
  model_dir = tmp_path / "run"
  checkpoints = ckpt.TrainCheckpointer(str(model_dir))
  for step in (1, 2, 3):
    save(checkpoints, step, float(step))
  checkpoints.close()
  yield model_dir
  # Whatever happened, it happened inside MODEL_DIR.
  assert sorted(os.listdir(tmp_path)) == ["run"]


def resume(model_dir: pathlib.Path) -> tuple[ckpt.Restored,
                                             ckpt.TrainCheckpointer]:
  """What a re-run does: restores the latest good step."""
  checkpoints = ckpt.TrainCheckpointer(str(model_dir))
  return (checkpoints.restore(make_state(0, 0.0),
                              frozen_record=FROZEN_RECORD), checkpoints)


def assert_fell_back_from_3(model_dir, caplog, damaged_files):
  """Step 3 damaged: the resume gets step 2, step 3 is moved (intact)
  to checkpoints.bad/, and a later save of step 3 works."""
  with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
    restored, checkpoints = resume(model_dir)
  assert int(restored.state.step) == 2 and restored.data_position == 2
  np.testing.assert_array_equal(
      restored.state.trainable["prompt"]["prompt"], np.full((3, 4), 2.0))
  assert checkpoints.all_steps() == [1, 2]
  assert layout.completed_steps(model_dir) == [1, 2]
  moved = list(pathlib.Path(layout.bad_steps_dir(model_dir)).iterdir())
  assert len(moved) == 1 and moved[0].name.startswith("3-")
  assert files(moved[0]) == damaged_files  # Moved as it was, not deleted.
  message = caplog.text
  assert "step 3" in message and str(moved[0]) in message
  assert "resuming from step 2" in message
  # Training goes on: step 3 is saved again and restores.
  save(checkpoints, 3, 3.5)
  assert checkpoints.all_steps() == [1, 2, 3]
  assert int(checkpoints.restore(make_state(0, 0.0)).state.step) == 3
  checkpoints.close()


def test_checksums_are_recorded_and_read_trainable_verifies_them(run):
  meta = layout.read_meta(run, 3)
  checksums = meta[layout.CHECKSUMS]
  prompt = np.full((3, 4), 3.0, np.float32)
  assert checksums["trainable/prompt/prompt"] == integrity.array_checksum(
      prompt)
  assert "step" in checksums and "opt_state/0/count" in checksums
  assert not any(name.startswith("frozen") for name in checksums)
  arrays, step = layout.read_trainable(run)
  assert step == 3
  np.testing.assert_array_equal(arrays["prompt/prompt"], prompt)


@pytest.mark.parametrize("which", ["largest", "array_chunks"])
def test_truncated_file_in_latest_step_falls_back_g6(run, caplog, which):
  state = run / "checkpoints" / "3" / "state"
  if which == "largest":
    targets = [max((p for p in state.rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)]
  else:
    targets = [p for p in state.rglob("*")
               if p.is_file() and p.parent.name == "d"]
  assert targets
  for target in targets:
    data = target.read_bytes()
    target.write_bytes(data[:len(data) // 2])
  assert_fell_back_from_3(run, caplog, files(run / "checkpoints" / "3"))


def test_missing_meta_falls_back_g7(run, caplog):
  shutil.rmtree(run / "checkpoints" / "3" / "meta")
  assert_fell_back_from_3(run, caplog, files(run / "checkpoints" / "3"))
  assert "meta" in caplog.text


def changed_values(model_dir: pathlib.Path, step: int, tmp: pathlib.Path):
  """Replaces `step`'s `state/` by a well-formed one with other values
  (a bit flip that every file format check lets through)."""
  other = tmp / "other"
  checkpoints = ckpt.TrainCheckpointer(str(other))
  save(checkpoints, step, 99.0)
  checkpoints.close()
  state = model_dir / "checkpoints" / str(step) / "state"
  shutil.rmtree(state)
  shutil.copytree(other / "checkpoints" / str(step) / "state", state)
  shutil.rmtree(other)


def test_changed_value_fails_its_checksum_and_falls_back(run, caplog,
                                                         tmp_path):
  changed_values(run, 3, tmp_path)
  with pytest.raises(integrity.ChecksumMismatchError,
                     match="trainable/prompt/prompt in .*checkpoints/3/state"):
    layout.read_trainable(run, 3)
  explicit = ckpt.TrainCheckpointer(str(run))
  with pytest.raises(ckpt.DamagedCheckpointError,
                     match="ChecksumMismatchError.*trainable/prompt/prompt"):
    explicit.restore(make_state(0, 0.0), 3)
  explicit.close()
  assert layout.completed_steps(run) == [1, 2, 3]  # An explicit step: no move.
  assert_fell_back_from_3(run, caplog, files(run / "checkpoints" / "3"))
  assert "ChecksumMismatchError" in caplog.text


def test_no_good_step_is_a_clear_error_and_moves_nothing(run, tmp_path):
  for step in (1, 2):
    shutil.rmtree(run / "checkpoints" / str(step) / "meta")
  changed_values(run, 3, tmp_path)
  before = files(run)
  with pytest.raises(ckpt.NoGoodCheckpointError,
                     match=r"step 3: ChecksumMismatchError.*step 2: KeyError"
                     r".*step 1: KeyError.*Nothing was moved"):
    resume(run)
  assert files(run) == before


def test_other_shapes_are_a_setting_error_and_move_nothing(run):
  before = files(run)
  template = make_state(0, 0.0)
  template = template.replace(trainable={"prompt": {"prompt": jnp.zeros(
      (5, 4))}}, opt_state=optax.adafactor(1e-3).init(
          {"prompt": {"prompt": jnp.zeros((5, 4))}}))
  checkpoints = ckpt.TrainCheckpointer(str(run))
  with pytest.raises(ckpt.CheckpointMismatchError,
                     match=r"trainable/prompt/prompt: checkpoint \(\(3, 4\)"
                     r".*PROMPT_LENGTH"):
    checkpoints.restore(template)
  checkpoints.close()
  assert files(run) == before


def test_a_record_without_checksums_restores_unverified(run):
  path = run / "checkpoints" / "3" / "meta" / "metadata"
  meta = json.loads(path.read_text())
  del meta[layout.CHECKSUMS]
  path.write_text(json.dumps(meta))
  restored, checkpoints = resume(run)
  checkpoints.close()
  assert int(restored.state.step) == 3
  assert layout.read_trainable(run)[1] == 3


def test_saving_an_existing_step_again_is_a_no_op_g4(tmp_path, caplog):
  model_dir = tmp_path / "run"
  best = ckpt.TrainCheckpointer(str(model_dir), keep=1, subdir=layout.BEST,
                                best_metric="accuracy")
  save(best, 2, 2.0, metrics={"accuracy": 0.5})
  best.close()
  before = files(model_dir)
  # The re-run after a kill before the evaluation was recorded: the same
  # step, evaluated again, saved again.
  rerun = ckpt.TrainCheckpointer(str(model_dir), keep=1, subdir=layout.BEST,
                                 best_metric="accuracy")
  with caplog.at_level(logging.INFO, logger=ckpt.__name__):
    save(rerun, 2, 2.0, metrics={"accuracy": 0.5})
  assert "already saved with the same content" in caplog.text
  assert files(model_dir) == before
  # Other content at the same step replaces it, with no leftovers.
  save(rerun, 2, 7.0, metrics={"accuracy": 0.75})
  assert rerun.all_steps() == [2]
  restored = rerun.restore(make_state(0, 0.0))
  np.testing.assert_array_equal(
      restored.state.trainable["prompt"]["prompt"], np.full((3, 4), 7.0))
  assert restored.meta["metrics"] == {"accuracy": 0.75}
  rerun.close()
  assert sorted(os.listdir(model_dir)) == [layout.BEST]
  assert sorted(os.listdir(tmp_path)) == ["run"]


def test_replacing_a_damaged_step_by_saving_it(run, tmp_path):
  changed_values(run, 3, tmp_path)
  checkpoints = ckpt.TrainCheckpointer(str(run))
  save(checkpoints, 3, 3.0)
  assert int(checkpoints.restore(make_state(0, 0.0), 3).state.step) == 3
  checkpoints.close()
  assert not os.path.exists(layout.staging_dir(run))


@pytest.mark.slow
def test_run_killed_before_its_best_evaluation_is_recorded_reruns_g4(
    tmp_path, monkeypatch, local_super_glue):
  """kill -9 after best/4 is saved, before `record_eval`: the re-run
  evaluates step 4 again, saves best/4 again (a no-op) and finishes."""
  del local_super_glue
  fixture = shared_path(*T5X_TINY)
  fixture_before = files(fixture)
  model_dir = tmp_path / "run"
  args = prompt_run_flags(model_dir, f"--gin.BEST_METRIC='{RTE}/accuracy'",
                          f"--gin.EVAL_MIXTURE_OR_TASK_NAME='{RTE}'",
                          "--gin.EvalConfig.num_examples=8")
  real_record = run_dir.record_eval

  def killed(*unused_args, **unused_kwargs):
    raise KeyboardInterrupt("killed before the evaluation was recorded")

  monkeypatch.setattr(run_dir, "record_eval", killed)
  try:
    with pytest.raises(KeyboardInterrupt):
      train.main(args)
  finally:
    gin.clear_config()
  assert layout.completed_steps(model_dir, layout.BEST) == [4]
  assert run_dir.evaluated_steps(str(model_dir)) == set()
  monkeypatch.setattr(run_dir, "record_eval", real_record)
  try:
    assert train.main(args) == 0
  finally:
    gin.clear_config()
  assert run_dir.evaluated_steps(str(model_dir)) == {4}
  assert layout.completed_steps(model_dir, layout.BEST) == [4]
  assert files(fixture) == fixture_before
  assert sorted(os.listdir(tmp_path)) == ["run"]


def test_readers_fall_back_without_moving_anything(run, caplog):
  shutil.rmtree(run / "checkpoints" / "3" / "meta")
  before = files(run)
  checkpoints = ckpt.TrainCheckpointer(str(run))
  with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
    restored = checkpoints.restore(make_state(0, 0.0), set_aside=False)
  checkpoints.close()
  assert int(restored.state.step) == 2
  assert "step 3" in caplog.text and "left in place" in caplog.text
  assert files(run) == before


def test_a_swap_killed_half_way_is_finished_on_the_next_start(run):
  """Killed between the two renames of `swap_in`: the old copy of step 3
  is in the staging folder, the new one too; the next start moves the
  new one in."""
  staging = pathlib.Path(layout.staging_dir(run))
  staging.mkdir()
  os.rename(run / "checkpoints" / "3", staging / "3.replaced")
  other = ckpt.TrainCheckpointer(str(staging.parent / "other"))
  save(other, 3, 3.25)
  other.close()
  os.rename(staging.parent / "other" / "checkpoints" / "3", staging / "3")
  shutil.rmtree(staging.parent / "other")
  restored, checkpoints = resume(run)
  checkpoints.close()
  assert int(restored.state.step) == 3
  np.testing.assert_array_equal(
      restored.state.trainable["prompt"]["prompt"], np.full((3, 4), 3.25))
  assert not staging.exists()


# Two processes of two CPU devices each, the prompt's rows sharded over all
# four: save steps 1-3, or resume (print the step and prompt restored) and
# save that step again.
_WORKER = r'''
import sys
from prompt_tuning.training import distributed
address, pid, model_dir, mode = sys.argv[1:5]
distributed.initialize(address, 2, int(pid))
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from prompt_tuning.training import checkpointer as ckpt
from prompt_tuning.training.train_state import TrainState
mesh = Mesh(np.array(jax.devices()), ("d",))
rows = NamedSharding(mesh, P("d"))

def global_array(x, sharding):
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

def state(step, value):
  trainable = {"prompt": {"prompt": np.full((4, 3), value, np.float32)}}
  opt_state = jax.tree_util.tree_map(
      lambda x: global_array(x, NamedSharding(mesh, P())),
      jax.device_get(optax.adafactor(1e-3).init(trainable)))
  return TrainState(step=global_array(np.int32(step), NamedSharding(mesh, P())),
                    trainable={"prompt": {"prompt": global_array(
                        trainable["prompt"]["prompt"], rows)}},
                    frozen={}, opt_state=opt_state)

checkpoints = ckpt.TrainCheckpointer(model_dir)
record = {"path": None, "fingerprint": None, "shapes": {}}
def save(s, value):
  checkpoints.save(state(s, value), data_position=s, frozen_record=record,
                   trainable_patterns=["prompt"])
if mode == "save":
  for s in (1, 2, 3):
    save(s, float(s))
else:
  restored = checkpoints.restore(state(0, 0.0), frozen_record=record)
  step = int(restored.state.step)
  prompt = distributed.gather(restored.state.trainable)["prompt"]["prompt"]
  save(step, float(step))  # Saved already: a no-op on every process.
  print(f"process {pid} restored step {step} prompt {float(prompt.mean())}"
        f" steps {list(checkpoints.all_steps())}", flush=True)
checkpoints.close()
'''


def _two_processes(model_dir, mode, env):
  address = f"localhost:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-c", _WORKER, address, str(i), str(model_dir), mode],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  return _finish(procs, timeout=240)


@pytest.mark.slow
def test_two_processes_agree_on_the_fallback(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
         "PYTHONPATH": str(REPO_ROOT),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  model_dir = tmp_path / "run"
  _two_processes(model_dir, "save", env)
  assert layout.completed_steps(model_dir) == [1, 2, 3]
  checksums = layout.read_meta(model_dir, 3)[layout.CHECKSUMS]
  assert checksums["trainable/prompt/prompt"] == integrity.array_checksum(
      np.full((4, 3), 3.0, np.float32))
  shutil.rmtree(model_dir / "checkpoints" / "3" / "meta")  # G7.
  outputs = _two_processes(model_dir, "resume", env)
  for pid, out in enumerate(outputs):
    assert (f"process {pid} restored step 2 prompt 2.0 steps [1, 2]"
            in out), out[-4000:]
  moved = os.listdir(layout.bad_steps_dir(model_dir))
  assert len(moved) == 1 and moved[0].startswith("3-")
  assert layout.completed_steps(model_dir) == [1, 2]
