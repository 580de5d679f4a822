"""The run gin files build `trainer.train`'s settings objects from the
user's macros, each object's fields are checked before anything is loaded,
and a resume may change only the periods among them. Fast: nothing is
trained."""

import gin
import pytest

from prompt_tuning import errors
from prompt_tuning import gin_utils
from prompt_tuning.training import run_dir
from prompt_tuning.training import run_settings as rs
from prompt_tuning.training import trainer

REQUIRED = ["MODEL_DIR = '/tmp/unused'", "MIXTURE_OR_TASK_NAME = 'task_a'",
            "INITIAL_CHECKPOINT_PATH = None"]


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _built(files, bindings):
  """`trainer.train`'s bound arguments, configurable references built."""
  gin_utils.parse_gin(["models/t5_1_1_tiny.gin", *files], bindings)
  out = {}
  for name in ("train_dataset_cfg", "eval_cfg", "checkpoint_cfg",
               "guard_cfg", "partitioning_cfg"):
    value = gin.query_parameter(f"trainer.train.{name}")
    if isinstance(value, gin.config.ConfigurableReference):
      value = value.scoped_configurable_fn()
    out[name] = value
  return out


def test_prompt_finetune_builds_the_objects_from_the_macros():
  built = _built(
      ["prompts/prompt.gin", "runs/prompt_finetune.gin"],
      REQUIRED + ["BATCH_SIZE = 16", "EVAL_PERIOD = 50",
                  "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 4}",
                  "EVAL_TASK_FEATURE_LENGTHS = {'inputs': 128, 'targets': 4}",
                  "LENGTH_BUCKETS = 32", "CHECKPOINT_PERIOD = 7",
                  "NUM_MICROBATCHES = 2", "BEST_METRIC = 'task_a/accuracy'",
                  "EvalConfig.num_examples = 9",
                  "DivergenceGuardConfig.max_norm_growth = None"])
  assert built["train_dataset_cfg"] == rs.DatasetConfig(
      "task_a", {"inputs": 64, "targets": 4}, "train", 16, length_buckets=32)
  assert built["eval_cfg"] == rs.EvalConfig(
      rs.DatasetConfig("task_a", {"inputs": 128, "targets": 4}, "validation",
                       16, length_buckets=32),
      period=50, num_examples=9, best_metric="task_a/accuracy")
  assert built["checkpoint_cfg"] == rs.CheckpointConfig(period=7)
  assert built["guard_cfg"] == rs.DivergenceGuardConfig(max_norm_growth=None)
  assert built["partitioning_cfg"] == rs.PartitioningConfig(
      num_microbatches=2)


def test_no_evaluation_by_macro():
  built = _built(["prompts/prompt.gin", "runs/prompt_finetune.gin"],
                 REQUIRED + ["EVAL_MIXTURE_OR_TASK_NAME = None"])
  assert not built["eval_cfg"].active


def test_model_finetune_and_pretrain_checkpoint_everything():
  built = _built(["runs/model_finetune.gin"], REQUIRED)
  assert built["checkpoint_cfg"] == rs.CheckpointConfig(save_frozen=True)
  assert built["eval_cfg"].active
  gin.clear_config()
  built = _built(["runs/pretrain.gin"], ["MODEL_DIR = '/tmp/unused'"])
  assert built["checkpoint_cfg"] == rs.CheckpointConfig(
      period=5000, save_frozen=True, export_t5x=True)
  assert not built["eval_cfg"].active  # EVAL_MIXTURE_OR_TASK_NAME = None.
  assert built["train_dataset_cfg"] == rs.DatasetConfig(
      "c4_v220_span_corruption", {"inputs": 512, "targets": 114}, "train",
      128)


def test_a_resume_may_change_the_periods_only():
  recorded = ("run_settings.CheckpointConfig.period = 10\n"
              "run_settings.CheckpointConfig.keep = 3\n"
              "run_settings.EvalConfig.period = 5\n"
              "train/run_settings.DatasetConfig.batch_size = 8\n")
  now = ("run_settings.CheckpointConfig.period = 20\n"
         "run_settings.CheckpointConfig.keep = 1\n"
         "run_settings.EvalConfig.period = 50\n"
         "train/run_settings.DatasetConfig.batch_size = 16\n")
  assert run_dir.config_differences(recorded, now) == [
      "train/run_settings.DatasetConfig.batch_size: 8 in config.gin, 16 now"]


DATA = rs.DatasetConfig("task_a", {"inputs": 8, "targets": 4}, "train", 8)


@pytest.mark.parametrize("settings, match", [
    (dict(train_dataset_cfg={"batch_size": 8}),
     r"train_dataset_cfg must be a run_settings.DatasetConfig.*"
     r"trainer.train.train_dataset_cfg = @train/run_settings.DatasetConfig"),
    (dict(train_dataset_cfg=rs.DatasetConfig(
        "task_a", {"inputs": 8}, "train", 8)),
     r"TASK_FEATURE_LENGTHS must have exactly the keys"),
    (dict(train_dataset_cfg=rs.DatasetConfig(
        "task_a", {"inputs": 8, "targets": 4}, "train", 0)),
     r"batch_size \(BATCH_SIZE\) must be >= 1"),
    (dict(checkpoint_cfg=rs.CheckpointConfig(keep=0)),
     r"\(CheckpointConfig.keep\) must be >= 1"),
    (dict(guard_cfg=rs.DivergenceGuardConfig(max_norm_growth=-1.0)),
     r"--gin.DivergenceGuardConfig.max_norm_growth=None"),
    (dict(partitioning_cfg=rs.PartitioningConfig(num_microbatches=0)),
     r"NUM_MICROBATCHES\) must be >= 1"),
    (dict(eval_cfg=rs.EvalConfig(rs.DatasetConfig(
        "task_a", {"inputs": 8, "targets": 0}, "validation", 8))),
     r"EVAL_TASK_FEATURE_LENGTHS\['targets'\] must be >= 1"),
    (dict(eval_cfg=rs.EvalConfig(DATA, num_examples=0)),
     r"\(EvalConfig.num_examples\) must be >= 1"),
    (dict(eval_cfg=rs.EvalConfig(DATA, period=-1)),
     r"\(EVAL_PERIOD\) must be >= 0"),
])
def test_settings_are_checked_before_anything(tmp_path, settings, match):
  with pytest.raises(errors.ConfigError, match=match):
    trainer.train(**{"model": None, "train_dataset_cfg": DATA,
                     "train_steps": 1, "model_dir": str(tmp_path / "run"),
                     **settings})
  assert not (tmp_path / "run").exists()
