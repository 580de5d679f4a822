"""The command lines as processes: `--help`, quiet start-up, the error as
the last line and a non-zero exit code."""

import subprocess
import sys

from helpers import REPO_ROOT, shared_path
from prompt_tuning.data import locations

MODULES = ("train", "evaluate", "infer", "predict")


def run(*args, env=None):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300, env=env)


def test_help_lists_the_t5x_flags():
  for module in MODULES:
    result = run(f"prompt_tuning.{module}", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--gin_file", "--gin_bindings", "--gin_search_paths",
                 "--[no]validate_only", "--[no]verbose",
                 "--[no]compilation_cache"):
      assert flag in result.stdout, (module, flag)


def test_unknown_flag_is_a_usage_error():
  result = run("prompt_tuning.train", "--gin_fle=runs/prompt_finetune.gin")
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: Unknown command line flag 'gin_fle'")
  assert "gin_file" in last and last.endswith("see --help for the flags.")


def test_bad_input_is_the_last_line_and_start_up_is_quiet(tmp_path):
  env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
         "PROMPT_TUNING_SUPER_GLUE_DIR": str(shared_path("data", "super_glue")),
         "PROMPT_TUNING_VOCAB": str(shared_path(*locations.VOCAB_IN_SHARED))}
  result = run(
      "prompt_tuning.train", "--gin_file=models/t5_1_1_tiny.gin",
      "--gin_file=prompts/prompt.gin", "--gin_file=runs/prompt_finetune.gin",
      f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
      "--gin.MIXTURE_OR_TASK_NAME='taskless_super_glue_rte_v102'",
      "--gin.INITIAL_CHECKPOINT_PATH='/nonexistent'", env=env)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: INITIAL_CHECKPOINT_PATH: Checkpoint "
                              "path /nonexistent does not exist")
  assert len(lines) == 1, lines  # No TensorFlow/CUDA chatter, no traceback.
  assert not (tmp_path / "run").exists()
