"""Early stopping (EARLY_STOPPING_PATIENCE, EARLY_STOPPING_MIN_DELTA): the
run ends at the right evaluation, records why, is not trained further by a
re-run, and stops at the same evaluation after a kill and re-run.

The runs are the tiny prompt run of `helpers.prompt_run_flags`, evaluated
every step; the evaluation is replaced by a scripted metric sequence, so
which evaluation stops the run is known in advance.
"""

import json

import gin
import pytest

from helpers import RTE, prompt_run_flags
from prompt_tuning import errors
from prompt_tuning import train
from prompt_tuning.training import evaluation
from prompt_tuning.training import run_dir
from prompt_tuning.training import state as state_lib

METRIC = f"{RTE}/accuracy"
# Accuracy by step. Patience 3: with min delta 1.0 only steps 1 and 2
# improve, so step 5 stops the run; with min delta 0.0 steps 3 and 4 improve
# too, so step 7 does.
SCRIPT = {1: 50.0, 2: 60.0, 3: 60.5, 4: 61.0, 5: 60.0, 6: 59.0, 7: 61.0,
          8: 70.0, 9: 70.0, 10: 70.0, 11: 70.0, 12: 70.0}


@pytest.fixture(autouse=True)
def _local_data_and_clean_gin(local_super_glue):
  yield
  gin.clear_config()


def args(model_dir, *overrides):
  """12 steps, an evaluation every step, a checkpoint every 4."""
  return prompt_run_flags(
      model_dir, f"--gin.EVAL_MIXTURE_OR_TASK_NAME='{RTE}'",
      "--gin.EvalConfig.num_examples=8", f"--gin.BEST_METRIC='{METRIC}'",
      "--gin.EVAL_PERIOD=1", *overrides, train_steps=12, checkpoint_period=4)


def scripted(monkeypatch, calls, kill_at=None):
  """Replaces the evaluation by SCRIPT (raising at step `kill_at`, as a
  kill would); appends each evaluated step to `calls`."""

  def call(self, params, step):
    if step == kill_at:
      raise KeyboardInterrupt(f"killed during the evaluation of step {step}")
    calls.append(step)
    return {RTE: {"accuracy": SCRIPT[step]}}

  monkeypatch.setattr(evaluation.Evaluation, "__call__", call)


def run(argv):
  assert train.main(argv) == 0
  gin.clear_config()


def checkpoint_steps(model_dir, subdir="checkpoints"):
  return sorted(int(p.name) for p in (model_dir / subdir).iterdir()
                if p.name.isdigit())


def test_stops_at_the_right_evaluation_and_a_rerun_trains_no_further(
    tmp_path, monkeypatch, capsys):
  model_dir, calls = tmp_path / "run", []
  scripted(monkeypatch, calls)
  command = args(model_dir, "--gin.EARLY_STOPPING_PATIENCE=3",
                 "--gin.EARLY_STOPPING_MIN_DELTA=1.0")
  run(command)
  assert calls == [1, 2, 3, 4, 5]
  # The final checkpoint is the stopping step's; best/ keeps the best.
  assert checkpoint_steps(model_dir) == [4, 5]
  assert checkpoint_steps(model_dir, "best") == [4]
  assert "Early stopping at step 5 after 3 evaluations" in (
      capsys.readouterr().err)
  stop = run_dir.early_stop_record(str(model_dir))
  assert stop == {run_dir.EARLY_STOPPED: True, "step": 5, "metric": METRIC,
                  "best_step": 2, "best": 60.0, "patience": 3,
                  "min_delta": 1.0, "evaluations_without_improvement": 3}
  # The other records read as before.
  assert [r["step"] for r in run_dir.eval_records(str(model_dir))] == [
      1, 2, 3, 4, 5]
  assert run_dir.evaluated_steps(str(model_dir)) == {1, 2, 3, 4, 5}
  lines = (model_dir / run_dir.EVAL_RECORD_FILE).read_text().splitlines()
  assert json.loads(lines[-1])["early_stopped"] is True

  # The same command again: no training, no evaluation, no new record,
  # and nothing loaded (the stop is read from eval_metrics.jsonl).
  def no_load(*unused_args, **unused_kwargs):
    raise AssertionError("the re-run of a stopped run loaded its state")

  with monkeypatch.context() as patched:
    patched.setattr(state_lib, "build_train_state", no_load)
    run(command)
  assert calls == [1, 2, 3, 4, 5]
  assert checkpoint_steps(model_dir) == [4, 5]
  assert len((model_dir / run_dir.EVAL_RECORD_FILE).read_text()
             .splitlines()) == 6
  assert "stopped early at step 5" in capsys.readouterr().err

  # The patience is resumable: raising it continues the run, which now
  # stops at step 7 (steps 3 to 7 without an improvement by more than 1).
  run(args(model_dir, "--gin.EARLY_STOPPING_PATIENCE=5",
           "--gin.EARLY_STOPPING_MIN_DELTA=1.0"))
  assert calls == [1, 2, 3, 4, 5, 6, 7]
  assert run_dir.early_stop_record(str(model_dir))["step"] == 7
  assert checkpoint_steps(model_dir)[-1] == 7


def test_a_killed_run_stops_at_the_same_evaluation(tmp_path, monkeypatch):
  def command(model_dir):
    return args(model_dir, "--gin.EARLY_STOPPING_PATIENCE=3")

  # Uninterrupted: min delta 0.0, steps 5, 6, 7 without an improvement.
  whole, calls = tmp_path / "whole", []
  scripted(monkeypatch, calls)
  run(command(whole))
  assert calls == [1, 2, 3, 4, 5, 6, 7]
  expected = run_dir.early_stop_record(str(whole))
  assert expected["step"] == 7 and expected["best_step"] == 4

  # Killed during step 6's evaluation (the checkpoint is step 4's), re-run.
  killed, calls = tmp_path / "killed", []
  scripted(monkeypatch, calls, kill_at=6)
  with pytest.raises(KeyboardInterrupt):
    train.main(command(killed))
  gin.clear_config()
  assert run_dir.early_stop_record(str(killed)) is None
  assert checkpoint_steps(killed) == [4]
  scripted(monkeypatch, calls)
  run(command(killed))
  assert calls == [1, 2, 3, 4, 5, 5, 6, 7]  # Step 5 evaluated again.
  assert run_dir.early_stop_record(str(killed)) == expected
  assert checkpoint_steps(killed)[-1] == 7

  # Killed after the final checkpoint, before the stop was recorded: the
  # re-run records it without training or evaluating.
  cut, calls = tmp_path / "cut", []
  scripted(monkeypatch, calls)

  def kill(model_dir, record):
    raise KeyboardInterrupt("killed before recording the stop")

  real_record = run_dir.record_early_stop
  monkeypatch.setattr(run_dir, "record_early_stop", kill)
  with pytest.raises(KeyboardInterrupt):
    train.main(command(cut))
  gin.clear_config()
  monkeypatch.setattr(run_dir, "record_early_stop", real_record)
  assert checkpoint_steps(cut)[-1] == 7
  run(command(cut))
  assert calls == [1, 2, 3, 4, 5, 6, 7]
  assert run_dir.early_stop_record(str(cut)) == expected


def test_patience_off_changes_nothing(tmp_path, monkeypatch):
  model_dir, calls = tmp_path / "run", []
  scripted(monkeypatch, calls)
  run(args(model_dir))
  assert calls == list(range(1, 13))
  assert run_dir.early_stop_record(str(model_dir)) is None
  assert checkpoint_steps(model_dir)[-1] == 12


def test_early_stop_due_counts_from_the_records():
  records = [{"step": s, METRIC: v} for s, v in SCRIPT.items()]

  def due(step, **settings):
    return run_dir.early_stop_due(records, step, metric=METRIC, **settings)

  assert due(6, patience=3, min_delta=0.0) is None
  assert due(7, patience=3, min_delta=0.0)["best_step"] == 4
  assert due(5, patience=3, min_delta=1.0)["best_step"] == 2
  # A step's last record counts (an evaluation re-run after a kill), later
  # steps do not, nor records without the metric.
  rerun = records + [{"step": 5, METRIC: 99.0}, {"step": 6, "other": 1.0}]
  assert run_dir.early_stop_due(rerun, 7, metric=METRIC, patience=3,
                                min_delta=0.0) is None
  assert run_dir.early_stop_due(rerun, 7, metric=METRIC, patience=2,
                                min_delta=0.0)["best_step"] == 5
  assert run_dir.early_stop_due([{"step": 1, METRIC: float("nan")}], 1,
                                metric=METRIC, patience=1,
                                min_delta=0.0)["best_step"] is None


@pytest.mark.parametrize("overrides, match", [
    (("--gin.EARLY_STOPPING_PATIENCE=-1",),
     r"early stopping patience \(EARLY_STOPPING_PATIENCE\) must be >= 1"),
    (("--gin.EARLY_STOPPING_PATIENCE=2", "--gin.BEST_METRIC=None"),
     "EARLY_STOPPING_PATIENCE=2 counts evaluations.*BEST_METRIC is None"),
    (("--gin.EARLY_STOPPING_MIN_DELTA=-0.5",),
     "EARLY_STOPPING_MIN_DELTA must be a number >= 0"),
])
def test_bad_settings_are_refused(tmp_path, overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    train.main(args(tmp_path / "run", *overrides))
  assert not (tmp_path / "run").exists()


def test_evaluation_before_training_counts_as_step_0(tmp_path, monkeypatch):
  model_dir, calls = tmp_path / "run", []
  monkeypatch.setitem(SCRIPT, 0, 65.0)
  scripted(monkeypatch, calls)
  command = args(model_dir, "--gin.EvalConfig.before_training=True",
                 "--gin.EARLY_STOPPING_PATIENCE=3",
                 "--gin.EARLY_STOPPING_MIN_DELTA=1.0")
  run(command)
  # Step 0 (65.0) is the best until step 8: steps 1, 2, 3 do not beat it.
  assert calls == [0, 1, 2, 3]
  assert run_dir.evaluated_steps(str(model_dir)) == {0, 1, 2, 3}
  stop = run_dir.early_stop_record(str(model_dir))
  assert (stop["step"], stop["best_step"], stop["best"]) == (3, 0, 65.0)
  # A resumed run does not evaluate step 0 again.
  run(args(model_dir, "--gin.EvalConfig.before_training=True",
           "--gin.EARLY_STOPPING_PATIENCE=None"))
  assert calls == [0, 1, 2, 3] + list(range(4, 13))
