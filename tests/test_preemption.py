"""SIGTERM / SIGINT during training: a checkpoint of the step reached, a
clear message, exit code 128 + the signal, and a resume bit-identical to an
uninterrupted run; the handlers live only as long as the loop."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import REPO_ROOT, prompt_run_flags, subprocess_env
from test_multihost import _free_port
from prompt_tuning.training import preemption

LENGTHS = {"inputs": 64, "targets": 8}


# The in-process tests of `StopSignals`: the handlers, the flag, restoring.

@pytest.fixture
def marker_handler():
  """A Python handler for SIGTERM during the test (SIG_DFL would kill
  pytest if a handler were not installed), restored after."""
  calls = []
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
  yield calls
  for signum, handler in before.items():
    signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_sets_the_flag_and_handlers_are_restored(signum,
                                                        marker_handler):
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  with preemption.StopSignals() as stop:
    assert not stop.requested(1)
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # Python runs the handler between bytecodes.
    assert stop.signum == signum and stop.requested(2)
    error = stop.preempted(2, "/run/checkpoints")
  assert {s: signal.getsignal(s) for s in before} == before
  assert not marker_handler  # The previous handler never saw it.
  assert isinstance(error, SystemExit) and error.code == 128 + signum
  assert error.step == 2 and error.signum == signum
  name = signal.Signals(signum).name
  assert str(error) == (
      f"Training stopped by {name} at step 2; its checkpoint is "
      f"/run/checkpoints/2. To resume, re-run the same command with the same "
      f"MODEL_DIR (exit code {128 + signum}).")


def test_second_signal_raises_keyboard_interrupt(marker_handler):
  before = signal.getsignal(signal.SIGINT)
  with pytest.raises(KeyboardInterrupt, match="SIGTERM received again"):
    with preemption.StopSignals() as stop:
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.01)
      assert stop.signum == signal.SIGINT
      os.kill(os.getpid(), signal.SIGTERM)  # e.g. while the save runs.
      time.sleep(0.01)
  assert signal.getsignal(signal.SIGINT) is before
  assert not marker_handler


def test_handlers_restored_on_exceptions_and_skipped_off_main_thread():
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  with pytest.raises(RuntimeError, match="boom"):
    with preemption.StopSignals():
      assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
      raise RuntimeError("boom")
  assert {s: signal.getsignal(s) for s in before} == before

  seen = []

  def in_thread():
    with preemption.StopSignals() as stop:
      seen.append({s: signal.getsignal(s) for s in before})
      seen.append(stop.requested(1))

  thread = threading.Thread(target=in_thread)
  thread.start()
  thread.join()
  assert seen == [before, False]


# A real run of `python -m prompt_tuning.train`, stopped by SIGTERM.

def _train_command(model_dir, train_steps):
  # No periodic checkpoint before the end; the tqdm bar on stderr shows the
  # steps done.
  return [sys.executable, "-m", "prompt_tuning.train", *prompt_run_flags(
      model_dir, "--gin.trainer.train.progress=True", lengths=LENGTHS,
      train_steps=train_steps, batch_size=4, checkpoint_period=1000)]


def _saved(model_dir, step):
  return ocp.StandardCheckpointer().restore(
      pathlib.Path(model_dir) / "checkpoints" / str(step) / "state")


def _steps(model_dir):
  return sorted(int(p.name) for p in (model_dir / "checkpoints").iterdir()
                if p.name.isdigit())


def _read_into(stream, chunks: list[str]) -> threading.Thread:
  """Reads `stream` into `chunks` in the background."""
  def read():
    for chunk in iter(lambda: stream.read(64), ""):
      chunks.append(chunk)
  thread = threading.Thread(target=read, daemon=True)
  thread.start()
  return thread


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_reached_and_resumes_exactly(
    tmp_path, local_super_glue):
  env = subprocess_env(local_super_glue, tmp_path)
  full, stopped = tmp_path / "full", tmp_path / "stopped"
  proc = subprocess.Popen(_train_command(stopped, 1000), env=env,
                          cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  chunks = []
  reader = _read_into(proc.stderr, chunks)
  deadline = time.time() + 300
  while (not re.search(r"\| +[1-9]\d*/1000", "".join(chunks)) and
         proc.poll() is None and time.time() < deadline):
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=300)
  reader.join(timeout=10)
  stderr = "".join(chunks)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-4000:]
  # The step it stopped at is checkpointed: the only checkpoint there is.
  steps = _steps(stopped)
  assert len(steps) == 1 and 1 <= steps[0] < 1000, (steps, stderr[-4000:])
  step = steps[0]
  assert (f"warning: Training stopped by SIGTERM at step {step}; its "
          f"checkpoint is {stopped}/checkpoints/{step}. To resume, re-run the "
          "same command with the same MODEL_DIR (exit code 143)."
          in stderr.splitlines()), stderr[-4000:]
  meta = json.loads((stopped / "checkpoints" / str(step) / "meta" /
                     "metadata").read_text())
  assert meta["data_position"] == step

  # Resumed to step `step` + 3, it equals a run that was never stopped.
  end = step + 3
  runs = [subprocess.Popen(_train_command(model_dir, end), env=env,
                           cwd=REPO_ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
          for model_dir in (full, stopped)]
  for run in runs:
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output[-4000:]
  expected, resumed = _saved(full, end), _saved(stopped, end)
  leaves = jax.tree_util.tree_leaves(expected)
  assert len(leaves) == len(jax.tree_util.tree_leaves(resumed)) > 3
  for a, b in zip(leaves, jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(
    tmp_path, local_super_glue):
  model_dir = tmp_path / "run"
  address = f"localhost:{_free_port()}"
  flags = prompt_run_flags(
      model_dir, "--gin.PartitioningConfig.mesh_shape=(2, 4)",
      "--gin.trainer.train.progress=True", lengths={"inputs": 32,
                                                    "targets": 8},
      train_steps=1000, checkpoint_period=1000)
  procs = [subprocess.Popen(
      [sys.executable, "-m", "prompt_tuning.train", *flags,
       f"--coordinator_address={address}", "--num_processes=2",
       f"--process_id={i}"],
      env=subprocess_env(local_super_glue, tmp_path, 4), cwd=REPO_ROOT,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [[], []]
  readers = [_read_into(p.stderr, out) for p, out in zip(procs, outputs)]
  try:
    deadline = time.time() + 300
    while (not re.search(r"\| +[1-9]\d*/1000", "".join(outputs[0])) and
           all(p.poll() is None for p in procs) and time.time() < deadline):
      time.sleep(0.01)
    procs[1].send_signal(signal.SIGTERM)  # Process 0 gets nothing.
    for proc in procs:
      proc.wait(timeout=300)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for reader in readers:
    reader.join(timeout=10)
  stderr = ["".join(out) for out in outputs]
  codes = [p.returncode for p in procs]
  assert codes == [143, 143], (codes, stderr[0][-2000:], stderr[1][-2000:])
  steps = _steps(model_dir)
  assert len(steps) == 1 and 1 <= steps[0] < 1000, steps
  assert (f"warning: Training stopped by SIGTERM at step {steps[0]}; its "
          f"checkpoint is {model_dir}/checkpoints/{steps[0]}. To resume, "
          "re-run the same command with the same MODEL_DIR (exit code 143)."
          in stderr[0].splitlines()), stderr[0][-3000:]
  meta = json.loads((model_dir / "checkpoints" / str(steps[0]) / "meta" /
                     "metadata").read_text())
  assert meta["data_position"] == steps[0]
