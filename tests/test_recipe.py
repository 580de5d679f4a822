"""The frozen-model recipe and the main job at toy scale: every stage trains
every parameter, the step carries over, the build is byte-identical for a
seed, a finished build is reused, and the main job scores and tunes a prompt
on it (`prompt_tuning.recipes`)."""

import hashlib
import json
import os

import numpy as np
import pytest

from conftest import shared_dir
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import t5x
from prompt_tuning.data import pretraining
from prompt_tuning.models import T5Config
from prompt_tuning.recipes import frozen_model
from prompt_tuning.recipes import steering

CONFIG = T5Config(vocab_size=32128, emb_dim=8, num_heads=2, head_dim=4,
                  mlp_dim=8, num_encoder_layers=1, num_decoder_layers=1)
# Two of the three stages (test_pretraining_tasks trains LM adaptation from
# a span-corruption checkpoint through the gin files).
STAGES = (
    frozen_model.Stage("pretrain", frozen_model.SPAN_CORRUPTION_TASK, {
        "inputs": 16, "targets": pretraining.span_corruption_lengths(16)[1]},
                       2, 8),
    frozen_model.Stage("multitask", frozen_model.MULTITASK_MIXTURE,
                       {"inputs": 16, "targets": 4}, 3, 8),
)


def _digest(directory: str) -> str:
  h = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(directory)):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      h.update(os.path.relpath(path, directory).encode())
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _build(cache_dir):
  return frozen_model.build(str(cache_dir), CONFIG, shared_dir=str(
      shared_dir()), seed=3, stages=STAGES, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  mp = pytest.MonkeyPatch()
  mp.setenv("PROMPT_TUNING_GLUE_DIR", str(shared_dir() / "data" / "glue"))
  mp.setenv("PROMPT_TUNING_VOCAB",
            str(shared_dir() / "models" / "t5_vocab" / "spiece.model"))
  cache = tmp_path_factory.mktemp("recipe")
  frozen = _build(cache)
  yield cache, frozen
  mp.undo()


def test_stages_train_everything_and_continue_the_step(built):
  cache, frozen = built
  assert os.path.basename(frozen) == "checkpoint_5"  # 2 + 3 steps.
  recipe = frozen_model.read_recipe(str(cache))
  assert list(recipe["stages"]) == ["pretrain", "multitask"]
  for name, row in recipe["stages"].items():
    assert row["seconds"] > 0 and np.isfinite(row["final_loss_per_token"])
  exported = {s.name: t5x.load_t5x_checkpoint(
      cache / s.name, restore_optimizer_state=False) for s in STAGES}
  assert [exported[s.name].step for s in STAGES] == [2, 5]
  frozen_ckpt = t5x.load_t5x_checkpoint(frozen)
  assert frozen_ckpt.step == 5
  before = param_tree.flatten_params(exported["pretrain"].params)
  after = param_tree.flatten_params(exported["multitask"].params)
  unchanged = [k for k in before if np.array_equal(before[k], after[k])]
  assert not unchanged, unchanged
  final = param_tree.flatten_params(frozen_ckpt.params)
  last = param_tree.flatten_params(exported["multitask"].params)
  assert all(np.array_equal(final[k], last[k]) for k in final)


def test_build_is_byte_identical_for_a_seed_and_reused(built, tmp_path):
  cache, frozen = built
  again = _build(tmp_path)
  assert _digest(again) == _digest(frozen)
  stamp = os.path.getmtime(os.path.join(frozen, t5x.CHECKPOINT_FILE))
  assert _build(cache) == frozen  # Reused, not rebuilt.
  assert os.path.getmtime(os.path.join(frozen, t5x.CHECKPOINT_FILE)) == stamp


def test_main_job_scores_and_tunes_a_prompt(built, tmp_path, capsys):
  cache, _ = built
  scores = steering.run(str(cache), str(shared_dir()), work_dir=str(tmp_path),
                        config=CONFIG, stages=STAGES, prompt_steps=2,
                        prompt_length=3, num_examples=16, progress=False)
  assert set(scores) == {"no_prompt", "task_name", "prompt_tuned"}
  assert all(0.0 <= v <= 100.0 for v in scores.values())
  out = capsys.readouterr().out
  assert "Reusing the frozen model" in out
  assert "SST-2 dev accuracy:" in out.splitlines()[-1]
  with open(tmp_path / "eval_task_name" / "metrics.json") as f:
    assert json.load(f)["results"]["glue_sst2_v002"]["accuracy"] == (
        scores["task_name"])
