"""The training command as a user meets it: every bad input is refused in
seconds, before any weight is loaded, with a message naming the fix, and
MODEL_DIR is left exactly as it was.

Each probe runs `prompt_tuning.train.main` in-process on the README's main
job (the T5X-written tiny checkpoint, real RTE files, the real vocabulary)
with one thing wrong.
"""

import json
import logging
import os
import pathlib
import time

import gin
import numpy as np
import pytest

from helpers import RTE, T5X_TINY, prompt_run_flags, shared_path
from prompt_tuning import errors
from prompt_tuning import gin_utils
from prompt_tuning import train
from prompt_tuning.data import network
from prompt_tuning.training import evaluation
from prompt_tuning.training import monitoring
from prompt_tuning.training import run_dir

@pytest.fixture(autouse=True)
def _local_data_and_clean_gin(local_super_glue):
  yield
  gin.clear_config()


# The README main job's command line (small), overrides appended.
argv = prompt_run_flags


def snapshot(path: pathlib.Path) -> dict[str, tuple[int, int]]:
  """Every file under `path` with its size and modification time."""
  if not path.exists():
    return {}
  return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in path.rglob("*")}


def refused(args, error, match, model_dir):
  """Runs the command, expects `error` matching `match` within seconds and
  MODEL_DIR unchanged (absent if it was absent)."""
  model_dir = pathlib.Path(model_dir)
  before = snapshot(model_dir)
  start = time.time()
  with pytest.raises(error, match=match) as info:
    train.main(args)
  elapsed = time.time() - start
  assert snapshot(model_dir) == before
  assert elapsed < 30, f"took {elapsed:.0f}s"
  gin.clear_config()
  return info.value


@pytest.mark.parametrize("override, match", [
    # The README's old lengths: labels cut to 'entail' / 'not_en'.
    ("--gin.TASK_FEATURE_LENGTHS={'inputs': 256, 'targets': 4}",
     r"cannot hold the label 'not_entailment'.*6 tokens with EOS.*"
     r"'targets': 6"),
    ("--gin.LEARNIG_RATE=0.001", "LEARNIG_RATE.*did you mean LEARNING_RATE"),
    ("--gin.TRAIN_STEPS='two'", r"train_steps \(TRAIN_STEPS\) must be an "
     r"integer >= 1, got 'two' \(str\)"),
    ("--gin.TRAIN_STEPS=0", r"train_steps \(TRAIN_STEPS\) must be >= 1"),
    ("--gin.TASK_FEATURE_LENGTHS=256", "TASK_FEATURE_LENGTHS must be a dict"),
    ("--gin.TASK_FEATURE_LENGTHS={'inputs': 64}", "exactly the keys"),
    ("--gin.BATCH_SIZE=12", "BATCH_SIZE 12 is not divisible by the mesh's "
     "8-way 'data' axis"),
    ("--gin.LEARNING_RATE='fast'", "LEARNING_RATE must be a positive number"),
    ("--gin.PROMPT_LENGTH=-1", r"PROMPT_LENGTH\) must be >= 0"),
    ("--gin.MIXTURE_OR_TASK_NAME='taskless_super_glue_rtee_v102'",
     "Unknown task or mixture 'taskless_super_glue_rtee_v102'"),
    ("--gin.INITIAL_CHECKPOINT_PATH='/nonexistent/checkpoint_1'",
     "INITIAL_CHECKPOINT_PATH: Checkpoint path /nonexistent/checkpoint_1 "
     "does not exist"),
    ("--gin.OPTIMIZER_STEP='latest'", "OPTIMIZER_STEP must be 'zero' or "
     "'restored'"),
    ("--gin.BEST_METRIC='accuracy'", "BEST_METRIC must be 'task/metric'"),
    ("--gin.DivergenceGuardConfig.max_update_ratio=-1", "max_update_ratio "
     "must be a positive number or None"),
    ("--gin.TASK_FEATURE_LENGTHS={'inputs': 64}", "TASK_FEATURE_LENGTHS must "
     "have exactly the keys"),
    (("--gin.LENGTH_BUCKETS=None", "--gin.GROUP_BY_LENGTH=True"),
     "GROUP_BY_LENGTH groups examples by the inputs length buckets, but "
     "LENGTH_BUCKETS is None"),
])
def test_bad_setting_is_refused_before_anything(tmp_path, override, match):
  overrides = (override,) if isinstance(override, str) else override
  refused(argv(tmp_path / "run", *overrides), errors.ConfigError, match,
          tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_required_model_dir(tmp_path):
  args = [a for a in argv(tmp_path / "run") if "MODEL_DIR" not in a]
  refused(args, gin_utils.GinConfigError,
          r"Required setting\(s\) not given: MODEL_DIR", tmp_path / "run")


def test_prompt_file_must_be_a_npy_of_the_right_shape(tmp_path):
  text = tmp_path / "prompt.txt"
  text.write_text("not an array")
  refused(argv(tmp_path / "run", f"--gin.PROMPT_FILE='{text}'",
               prompt="prompts/from_file.gin"), errors.ConfigError,
          f"Prompt file {text} is not a readable .npy array", tmp_path / "run")
  wrong = tmp_path / "prompt.npy"
  np.save(wrong, np.zeros((5, 4), np.float32))
  refused(argv(tmp_path / "run", f"--gin.PROMPT_FILE='{wrong}'",
               prompt="prompts/from_file.gin"), errors.ConfigError,
          r"holds an array of shape \[5, 4\], expected \[3, 4\]",
          tmp_path / "run")


def test_offline_tfds_fails_fast_naming_the_setting(tmp_path, monkeypatch):
  monkeypatch.delenv("PROMPT_TUNING_SUPER_GLUE_DIR")
  monkeypatch.setenv("PROMPT_TUNING_TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setenv("PROMPT_TUNING_OFFLINE", "1")
  refused(argv(tmp_path / "run"), network.DataUnavailableError,
          "PROMPT_TUNING_SUPER_GLUE_DIR", tmp_path / "run")
  assert not (tmp_path / "tfds").exists() or not any(
      (tmp_path / "tfds").iterdir())


def test_unreachable_vocabulary_names_the_variable(tmp_path, monkeypatch):
  monkeypatch.delenv("PROMPT_TUNING_VOCAB")
  monkeypatch.setenv("PROMPT_TUNING_OFFLINE", "1")
  refused(argv(tmp_path / "run"), network.DataUnavailableError,
          "PROMPT_TUNING_VOCAB", tmp_path / "run")


def test_validate_only_checks_and_writes_nothing(tmp_path, capsys):
  assert train.main(argv(tmp_path / "run", "--validate_only")) == 0
  assert "Configuration valid" in capsys.readouterr().out
  assert not (tmp_path / "run").exists()


def test_t5x_style_flags_and_search_paths(tmp_path, capsys):
  extra = tmp_path / "gin"
  extra.mkdir()
  (extra / "seed.gin").write_text("SEED = 7\n")
  args = argv(tmp_path / "run", "--validate_only",
              f"--gin_search_paths={extra}", "--gin_file=seed.gin",
              "--gin_bindings=BATCH_SIZE = 16")
  assert train.main(args) == 0
  assert gin.query_parameter("%SEED") == 7
  assert gin.query_parameter("%BATCH_SIZE") == 16


def test_one_run_per_model_dir(tmp_path):
  model_dir = tmp_path / "run"
  with run_dir.RunLock(str(model_dir)):
    error = refused(argv(model_dir), run_dir.RunLockedError,
                    f"MODEL_DIR {model_dir} is in use by another run",
                    model_dir)
    assert f"pid {os.getpid()}" in str(error) and "started 20" in str(error)
  assert not model_dir.exists()  # The lock created it and cleaned up.


def test_a_dead_processes_lock_is_taken_over(tmp_path, caplog, monkeypatch):
  # The command line stops the package's logs at its own handler.
  monkeypatch.setattr(logging.getLogger("prompt_tuning"), "propagate", True)
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  (model_dir / run_dir.LOCK_FILE).write_text(json.dumps(
      {"host": "h", "pid": 999999, "started": "2026-01-01T00:00:00+00:00"}))
  run_dir.check_unlocked(str(model_dir))  # No live holder.
  with run_dir.RunLock(str(model_dir)):
    holder = json.loads((model_dir / run_dir.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid()
  assert "no longer running (pid 999999" in caplog.text
  assert not (model_dir / run_dir.LOCK_FILE).exists()


def test_parse_bindings_reads_gin_config_text():
  text = ("from __gin__ import dynamic_registration\n"
          "# Macros:\nA = 1\nB = {'inputs': 64,\n     'targets': 8}\n"
          "C = ('x',\n 'y')\nfn.p = %A\n")
  assert run_dir.parse_bindings(text) == {
      "A": "1", "B": "{'inputs': 64, 'targets': 8}", "C": "('x', 'y')",
      "fn.p": "%A"}


@pytest.mark.slow
def test_resume_refuses_other_settings_and_reruns_a_killed_evaluation(
    tmp_path, monkeypatch, capsys):
  model_dir = tmp_path / "run"
  args = argv(model_dir, f"--gin.BEST_METRIC='{RTE}/accuracy'",
              f"--gin.EVAL_MIXTURE_OR_TASK_NAME='{RTE}'",
              "--gin.EvalConfig.num_examples=16")
  real_call = evaluation.Evaluation.__call__

  def killed(self, params, step):
    raise KeyboardInterrupt("killed during the evaluation")

  # 1. Killed during the final evaluation, after the step-4 checkpoint.
  monkeypatch.setattr(evaluation.Evaluation, "__call__", killed)
  with pytest.raises(KeyboardInterrupt):
    train.main(args)
  gin.clear_config()
  assert (model_dir / "checkpoints" / "4").is_dir()
  assert run_dir.evaluated_steps(str(model_dir)) == set()
  assert not (model_dir / run_dir.LOCK_FILE).exists()
  monkeypatch.setattr(evaluation.Evaluation, "__call__", real_call)

  # 2. Resuming it as another experiment is refused; nothing changes.
  recorded = (model_dir / "config.gin").read_text()
  assert "PROMPT_LENGTH = 3" in recorded
  error = refused(args + ["--gin.PROMPT_LENGTH=5"],
                  run_dir.RunConfigMismatchError,
                  "PROMPT_LENGTH: 3 in config.gin, 5 now", model_dir)
  assert "config.gin" in str(error)

  # 3. The same command resumes: the missing evaluation runs first, and
  # the best checkpoint sees it.
  assert train.main(args) == 0
  assert f"eval step 4 {RTE}: accuracy=" in capsys.readouterr().out
  assert run_dir.evaluated_steps(str(model_dir)) == {4}
  best = json.loads((model_dir / "best" / "4" / "meta" / "metadata")
                    .read_text())
  assert f"{RTE}/accuracy" in best["metrics"]
  gin.clear_config()

  # 4. Training longer is a resume, not another experiment; step 4 is not
  # evaluated again.
  assert train.main(args + ["--gin.TRAIN_STEPS=6"]) == 0
  assert (model_dir / "config.gin").read_text() == recorded
  assert (model_dir / "checkpoints" / "6").is_dir()
  assert [r["step"] for r in run_dir.eval_records(str(model_dir))] == [4, 6]


@pytest.mark.slow
def test_divergence_guard_stops_before_checkpointing(tmp_path):
  model_dir = tmp_path / "run"
  with pytest.raises(monitoring.DivergenceError, match="Training diverged by step"
                     ".*Lower LEARNING_RATE"):
    train.main(argv(model_dir, "--gin.LEARNING_RATE=1e30",
                    "--gin.trainer.train.log_period=1"))
  assert not (model_dir / "checkpoints").exists() or not any(
      p.name.isdigit() for p in (model_dir / "checkpoints").iterdir())
  assert not (model_dir / run_dir.LOCK_FILE).exists()


def test_bad_eval_feature_lengths_are_refused(tmp_path):
  refused(argv(tmp_path / "run", f"--gin.EVAL_MIXTURE_OR_TASK_NAME='{RTE}'",
               "--gin.EVAL_TASK_FEATURE_LENGTHS={'inputs': 0, 'targets': 8}"),
          errors.ConfigError,
          r"EVAL_TASK_FEATURE_LENGTHS\['inputs'\] must be >= 1",
          tmp_path / "run")


def test_unknown_eval_split_is_refused(tmp_path):
  refused(argv(tmp_path / "run",
               f"--gin.EVAL_MIXTURE_OR_TASK_NAME='{RTE}'",
               "--gin.eval/DatasetConfig.split='dev'"), errors.ConfigError,
          f"{RTE} has no 'dev' split", tmp_path / "run")


def test_evaluate_checks_before_loading(tmp_path):
  from prompt_tuning import evaluate  # pylint: disable=g-import-not-at-top
  args = ["--gin_file=models/t5_1_1_tiny.gin", "--gin_file=prompts/prompt.gin",
          "--gin_file=runs/prompt_eval.gin",
          f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
          f"--gin.MIXTURE_OR_TASK_NAME='{RTE}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path(*T5X_TINY)}'",
          "--gin.PROMPT_LENGTH=3"]
  with pytest.raises(errors.ConfigError, match="No training checkpoint in"):
    evaluate.main(args)
  gin.clear_config()
  with pytest.raises(errors.ConfigError, match="cannot hold the label"):
    evaluate.main(args + ["--gin.TASK_FEATURE_LENGTHS="
                          "{'inputs': 64, 'targets': 3}"])
  assert not (tmp_path / "run").exists()
