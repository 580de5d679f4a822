"""Multi-task serving: RTE and CB examples share batches, each with its own
task's prompt from a bank, and decode exactly as serving each task alone."""

import itertools

import flax.linen as nn
import jax
import numpy as np
import pytest

from helpers import T5_VOCAB_SIZE, tiny_model
from prompt_tuning import partitioning
from prompt_tuning.analysis import bank
from prompt_tuning.analysis import serving
from prompt_tuning.training import data
from prompt_tuning.training import inference
from prompt_tuning.training import partitioned

RTE = "taskless_super_glue_rte_v102"
CB = "taskless_super_glue_cb_v102"
LENGTHS = {"inputs": 48, "targets": 4}


@pytest.fixture(autouse=True)
def local_data(local_super_glue):
  return local_super_glue


def test_interleave_mixes_tasks_round_robin():
  task_ids, positions = serving.interleave([3, 1, 2])
  np.testing.assert_array_equal(task_ids, [0, 1, 2, 0, 2, 0])
  np.testing.assert_array_equal(positions, [0, 0, 0, 1, 1, 2])


@pytest.mark.slow
def test_mixed_batches_equal_serving_each_task_alone(tmp_path):
  model = tiny_model("prompt", prompt_length=3, vocab_size=T5_VOCAB_SIZE,
                     num_encoder_layers=1, num_decoder_layers=1)
  width = model.module.config.emb_dim
  base = jax.device_get(jax.jit(
      lambda rng: nn.unbox(model.init(rng, 1, 1))["params"])(
          jax.random.PRNGKey(0)))
  rng = np.random.RandomState(3)
  prompts = {RTE: rng.uniform(-2, 2, (3, width)).astype(np.float32),
             CB: rng.uniform(-2, 2, (3, width)).astype(np.float32)}
  # One device: the equality is about rows and prompts, not sharding.
  mesh = partitioning.create_mesh(mesh_shape=(1, 1),
                                  devices=jax.devices()[:1])
  mixed = serving.serve_mixed(model, base, prompts, LENGTHS, batch_size=8,
                              num_examples=12, mesh=mesh)
  assert {k: len(v) for k, v in mixed.items()} == {RTE: 12, CB: 12}

  predict = partitioned.compile_model_fn(
      model.predict_batch, mesh,
      partitioning.param_shardings(model.init_shapes()["params"], mesh))
  for task_name, prompt in prompts.items():
    alone = list(itertools.islice(inference.predict_task(
        data.get_task(task_name), predict, bank.with_prompt(base, prompt),
        LENGTHS, 8, "validation"), 12))
    assert [{k: v for k, v in r.items() if k != "target"}
            for r in mixed[task_name]] == alone, task_name
  # Each record's target is its task's; the metrics are the task's own.
  scores = serving.task_metrics(mixed)
  for task_name, records in mixed.items():
    hits = [r["postprocessed"] == r["target"] for r in records]
    assert scores[task_name]["accuracy"] == pytest.approx(
        100 * sum(hits) / len(hits))
  # (test_analysis_ensemble checks that bank rows really use their own
  # prompt: different prompts decode differently there.)

  paths = serving.write_records(mixed, str(tmp_path), "validation")
  lines = open(paths[CB]).read().splitlines()
  assert len(lines) == 12 and '"prediction"' in lines[0]
