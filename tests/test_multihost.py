"""Multi-process training for real: two processes of four CPU devices each
(gloo collectives, a localhost coordinator) train a prompt on a `(2, 4)`
mesh (`data` over the processes, `model` within each), checkpoint, and a
second launch resumes; the losses and the final prompt equal those of one
process with eight devices fed the same global batches.
"""

import json
import pathlib
import socket
import subprocess
import sys
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import REPO_ROOT, prompt_run_flags, subprocess_env
from prompt_tuning.training import distributed

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train_flags(model_dir: pathlib.Path, train_steps: int) -> list[str]:
  return prompt_run_flags(
      model_dir, "--gin.PartitioningConfig.mesh_shape=(2, 4)",
      "--gin.trainer.train.log_period=1",
      lengths={"inputs": 32, "targets": 8}, train_steps=train_steps)


def _start_two_processes(model_dir, train_steps, env) -> list[subprocess.Popen]:
  address = f"localhost:{_free_port()}"
  return [subprocess.Popen(
      [sys.executable, "-m", "prompt_tuning.train",
       *_train_flags(model_dir, train_steps),
       f"--coordinator_address={address}", "--num_processes=2",
       f"--process_id={i}"],
      env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=timeout)[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-4000:]
  return outputs


def _losses(model_dir: pathlib.Path) -> dict[int, float]:
  """Every step's logged loss, from the TensorBoard events of all launches."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  losses = {}
  for path in sorted((model_dir / "train").glob("events.out.tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == "loss":
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  return losses


def _saved(model_dir: pathlib.Path, step: int):
  """(state tree as numpy, meta) of a checkpoint, whichever devices wrote
  it (the two processes' device ids are not this process's)."""
  path = model_dir / "checkpoints" / str(step) / "state"
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      checkpointer.metadata(path).item_metadata.tree)
  tree = jax.device_get(checkpointer.restore(path, target))
  meta = json.loads((model_dir / "checkpoints" / str(step) / "meta" /
                     "metadata").read_text())
  return tree, meta


@pytest.mark.slow
def test_two_processes_train_resume_and_match_one_process(tmp_path,
                                                          local_super_glue):
  multi, single = tmp_path / "two_processes", tmp_path / "one_process"
  reference = subprocess.Popen(
      [sys.executable, str(REPO_ROOT / "tests" / "multihost_worker.py"), "2",
       *_train_flags(single, 4)],
      env=subprocess_env(local_super_glue, tmp_path, 8), cwd=REPO_ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  env = subprocess_env(local_super_glue, tmp_path, 4)
  procs = _start_two_processes(multi, 2, env)
  first = _finish(procs)
  assert "train loss=" in first[0]
  assert "train loss=" not in first[1]  # Process 0 reports for the run.
  assert sorted(p.name for p in multi.iterdir()) == [
      "checkpoints", "config.gin", "train"]  # The lock is gone.
  _finish(_start_two_processes(multi, 4, env))  # Resumes from step 2.
  _finish([reference])

  # Each process read its shard of the data: 4 rows a step, position 4.
  tree, meta = _saved(multi, 4)
  want, want_meta = _saved(single, 4)
  assert meta["data_position"] == want_meta["data_position"] == 4
  # The losses agree to float precision (steps 1 and 2 bit for bit). The
  # gradient's sum over `data` runs through gloo across processes, in
  # another order than within one process: ~1e-7 relative noise, which
  # Adafactor's normalised updates (lr 0.3) make ~1e-6 on the prompt after 2
  # steps and ~1e-5 after 4 (measured); a wrong batch row would move it by
  # ~1e-1.
  prompt = tree["trainable"]["prompt"]["prompt"]
  np.testing.assert_allclose(prompt, want["trainable"]["prompt"]["prompt"],
                             rtol=0, atol=5e-5)
  assert int(tree["step"]) == 4
  losses, want_losses = _losses(multi), _losses(single)
  assert sorted(losses) == sorted(want_losses) == [1, 2, 3, 4]
  np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                             [want_losses[s] for s in sorted(want_losses)],
                             rtol=1e-6)
  # The prompt moved far more than the tolerance between steps 2 and 4.
  first_prompt = _saved(multi, 2)[0]["trainable"]["prompt"]["prompt"]
  assert np.abs(prompt - first_prompt).max() > 1e-2


class _Device:

  def __init__(self, process_index: int):
    self.process_index = process_index


class _Sharding:
  """Rows of a batch over a `(data, model)` grid of devices, by process."""

  def __init__(self, data: int, model: int, processes: int):
    per_process = data * model // processes
    self.map = {}
    for d in range(data):
      for m in range(model):
        rows = 8 // data
        device = _Device((d * model + m) // per_process)
        self.map[device] = (slice(d * rows, (d + 1) * rows),)

  def devices_indices_map(self, shape):
    assert shape == (8,)
    return self.map


@pytest.mark.parametrize("mesh, process, rows, shard", [
    ((2, 4), 0, (0, 4), (0, 2)),   # `data` spans the processes.
    ((2, 4), 1, (4, 8), (1, 2)),
    ((8, 1), 1, (4, 8), (1, 2)),
    ((4, 2), 0, (0, 4), (0, 2)),
    ((1, 8), 1, (0, 8), None),     # Every process feeds the whole batch.
])
def test_batch_feed_rows_and_shards(monkeypatch, mesh, process, rows, shard):
  monkeypatch.setattr(distributed.jax, "process_index", lambda: process)
  feed = distributed.batch_feed(_Sharding(*mesh, processes=2), 8)
  assert feed.rows == rows and feed.local_batch_size == rows[1] - rows[0]
  got: Optional[tuple[int, int]] = None
  if feed.shard_info is not None:
    got = (feed.shard_info.index, feed.shard_info.num_shards)
  assert got == shard


def test_initialize_refuses_half_given_settings():
  assert distributed.initialize() is False  # Single process: nothing to do.
  with pytest.raises(distributed.DistributedSetupError,
                     match="num_processes, process_id missing"):
    distributed.initialize(coordinator_address="localhost:1234")
  with pytest.raises(distributed.DistributedSetupError, match="host:port"):
    distributed.initialize(coordinator_address="localhost", num_processes=2,
                           process_id=0)
  with pytest.raises(distributed.DistributedSetupError, match="below"):
    distributed.initialize(coordinator_address="localhost:1234",
                           num_processes=2, process_id=2)


def test_train_command_refuses_half_given_multiprocess_flags(tmp_path):
  from prompt_tuning import train  # pylint: disable=g-import-not-at-top
  with pytest.raises(distributed.DistributedSetupError,
                     match="--coordinator_address=host:port"):
    train.main([*_train_flags(tmp_path / "run", 2), "--process_id=1"])
  assert not (tmp_path / "run").exists()
