"""The frozen-model recipe and the main job at toy scale: every stage trains
every parameter, the step carries over, the build is byte-identical for a
seed, a finished build is reused, and the main job scores and tunes a prompt
on it (`prompt_tuning.recipes`)."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from helpers import T5_VOCAB_SIZE, shared_dir, tiny_config
from prompt_tuning.checkpoints import integrity
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import t5x
from prompt_tuning.data import locations
from prompt_tuning.data import pretraining
from prompt_tuning.recipes import frozen_model
from prompt_tuning.recipes import steering

pytestmark = pytest.mark.slow  # Every test shares one toy build (~20 s).

CONFIG = tiny_config(vocab_size=T5_VOCAB_SIZE, num_encoder_layers=1,
                     num_decoder_layers=1)
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
            str(shared_dir().joinpath(*locations.VOCAB_IN_SHARED)))
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
  exported = {s.name: sharded.open_checkpoint(cache / s.name)
              for s in STAGES}
  assert [exported[s.name].step for s in STAGES] == [2, 5]
  frozen_ckpt = sharded.open_checkpoint(frozen)
  assert frozen_ckpt.step == 5
  before = param_tree.flatten_params(exported["pretrain"].read_all())
  after = param_tree.flatten_params(exported["multitask"].read_all())
  unchanged = [k for k in before if np.array_equal(before[k], after[k])]
  assert not unchanged, unchanged
  final = param_tree.flatten_params(frozen_ckpt.read_all())
  assert all(np.array_equal(final[k], after[k]) for k in final)


def _ship(frozen, directory, recipe):
  """A copy laid out as shared/ ships the recipe's output: recipe.json beside
  checkpoint_<step>/."""
  shutil.copytree(frozen, directory / os.path.basename(frozen))
  with open(directory / frozen_model.RECIPE_FILE, "w") as f:
    json.dump(recipe, f)
  return directory


def test_recipe_records_its_fingerprint_and_the_files_digest(built):
  cache, frozen = built
  recipe = frozen_model.read_recipe(str(cache))
  assert recipe["fingerprint"] == frozen_model.fingerprint(CONFIG, STAGES, 3)
  assert recipe["fingerprint"] != frozen_model.fingerprint(CONFIG, STAGES, 4)
  assert recipe["fingerprint"] != frozen_model.fingerprint(
      CONFIG, STAGES[:1], 3)
  assert recipe["frozen"]["step"] == 5
  # The shell command of `checkpoint_digest`'s docstring gives the same
  # number (the checksum manifest left out: shipped copies predate it).
  assert (pathlib.Path(frozen) / integrity.MANIFEST_NAME).is_file()
  shell = subprocess.run(
      f"find . -type f ! -path ./{integrity.MANIFEST_NAME} | LC_ALL=C sort "
      "| xargs sha256sum | sha256sum",
      shell=True, cwd=frozen, capture_output=True, text=True, check=True)
  assert shell.stdout.split()[0] == recipe["frozen"]["sha256"]
  assert frozen_model.verified_checkpoint(str(cache), recipe["fingerprint"]
                                          ) == (frozen, "")


def test_a_shipped_copy_is_used_only_when_current_and_intact(built, tmp_path):
  cache, frozen = built
  recipe = frozen_model.read_recipe(str(cache))
  current = recipe["fingerprint"]
  shipped = _ship(frozen, tmp_path / "shipped", recipe)
  path, why = frozen_model.verified_checkpoint(str(shipped), current)
  assert path == str(shipped / "checkpoint_5") and not why
  old = _ship(frozen, tmp_path / "old", {"seed": 3, "stages": {}})
  assert "records no fingerprint" in frozen_model.verified_checkpoint(
      str(old), current)[1]
  other = _ship(frozen, tmp_path / "other", {**recipe, "fingerprint": "ab"})
  assert "another recipe" in frozen_model.verified_checkpoint(
      str(other), current)[1]
  damaged = _ship(frozen, tmp_path / "damaged", recipe)
  with open(damaged / "checkpoint_5" / t5x.CHECKPOINT_FILE, "ab") as f:
    f.write(b"\0")
  assert "damaged or changed" in frozen_model.verified_checkpoint(
      str(damaged), current)[1]
  assert "does not exist" in frozen_model.verified_checkpoint(
      str(tmp_path / "nothing"), current)[1]


def test_build_is_byte_identical_for_a_seed_and_reused(built, tmp_path,
                                                        capsys):
  cache, frozen = built
  stale = _ship(frozen, tmp_path / "shipped", {"seed": 3, "stages": {}})
  kwargs = dict(seed=3, config=CONFIG, stages=STAGES,
                shipped_dir=str(stale), progress=False)
  again = steering.find_or_build(str(tmp_path / "cache"), str(shared_dir()),
                                 **kwargs)
  out = capsys.readouterr().out
  assert "Building the frozen model" in out and "no fingerprint" in out
  assert "stage pretrain" in out and "stage multitask" in out
  assert again.path != frozen
  assert again.sha256 == frozen_model.checkpoint_digest(frozen)
  assert _digest(again.path) == _digest(frozen)
  stamp = os.path.getmtime(os.path.join(again.path, t5x.CHECKPOINT_FILE))
  assert steering.find_or_build(str(tmp_path / "cache"), str(shared_dir()),
                                **kwargs) == again  # Reused, not rebuilt.
  assert "built earlier" in capsys.readouterr().out
  assert os.path.getmtime(os.path.join(again.path,
                                       t5x.CHECKPOINT_FILE)) == stamp
  # A directory holding another recipe's build is refused, not mixed in.
  with pytest.raises(ValueError, match="another recipe"):
    frozen_model.build(str(cache), CONFIG, shared_dir=str(shared_dir()),
                       seed=4, stages=STAGES, progress=False)


def test_main_job_runs_again_from_its_records(built, tmp_path, capsys):
  cache, _ = built
  kwargs = dict(seed=3, config=CONFIG, stages=STAGES, shipped_dir=str(cache),
                prompt_steps=2, prompt_length=3, num_examples=16,
                progress=False)
  jobs = tmp_path / "cache"
  first = steering.run(str(jobs), str(shared_dir()), **kwargs)
  assert set(first) == {"no_prompt", "task_name", "prompt_tuned", "majority"}
  assert all(0.0 <= v <= 100.0 for v in first.values())
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 4, out  # One line per stage, the result last.
  assert "the shipped copy" in out[0] and not list(jobs.glob("recipe_*"))
  assert out[-1].startswith("SST-2 dev accuracy:")
  (work,) = jobs.glob("steering_*")
  with open(work / "eval_task_name" / "metrics.json") as f:
    assert json.load(f)["results"]["glue_sst2_v002"]["accuracy"] == (
        first["task_name"])

  # Again: everything is read back, nothing trained or scored.
  assert steering.run(str(jobs), str(shared_dir()), **kwargs) == first
  again = capsys.readouterr().out.splitlines()
  assert "finished earlier" in again[2] and again[-1] == out[-1]

  # Interrupted before the frozen model's score and the prompt's evaluation
  # were recorded: the re-run scores and evaluates again, same numbers.
  os.remove(work / "eval_no_prompt" / "metrics.json")
  open(work / "sst2_prompt" / "eval_metrics.jsonl", "w").close()
  assert steering.run(str(jobs), str(shared_dir()), **kwargs) == first
  assert capsys.readouterr().out.splitlines()[-1] == out[-1]
