"""The README's commands run as written.

Every `python -m prompt_tuning.<entry>` line of the README's shell blocks is
parsed with `shlex` and run in-process: the main job's flags are its own
parser's; the paper's RTE train / evaluate / infer commands run with
`--validate_only` (every flag, gin file and macro checked, nothing loaded),
their model, checkpoint and MODEL_DIR swapped for the tiny T5X-written
fixture and a temporary directory. The test command is the one `.ci/run`
runs.
"""

import importlib
import os
import re
import shlex

import gin
import pytest

from helpers import REPO_ROOT, T5X_TINY, shared_path
from prompt_tuning import cli
from prompt_tuning import main_job

README = REPO_ROOT / "README.md"


def _commands() -> list[list[str]]:
  """The README's `python ...` command lines of its ```sh blocks."""
  blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
  lines = [line for block in blocks for line in block.splitlines()]
  commands = []
  for line in lines:
    for part in line.split("&&"):
      words = shlex.split(part, comments=True)
      if words and (words[0].endswith("python") or words[0] == "python3"):
        commands.append(words)
  return commands


def _entry(words: list[str]) -> tuple[str, list[str]]:
  """`['python', '-m', 'prompt_tuning.train', *argv]` -> (module, argv)."""
  assert words[1] == "-m", words
  return words[2], words[3:]


def test_the_readme_has_its_commands():
  modules = [w[2] for w in _commands() if len(w) > 2 and w[1] == "-m"]
  assert "prompt_tuning.main_job" in modules
  assert {"prompt_tuning.train", "prompt_tuning.evaluate",
          "prompt_tuning.infer"} <= set(modules)
  assert ["-m", "pytest", "tests", "-q"] in [w[1:] for w in _commands()]
  ci = (REPO_ROOT / ".ci" / "run").read_text()
  assert "pytest tests -q" in ci


def test_main_job_flags_parse_as_written():
  [words] = [w for w in _commands() if "prompt_tuning.main_job" in w]
  _, argv = _entry(words)
  args = cli.parse_flags(argv, main_job._flags(), main_job.__doc__)  # pylint: disable=protected-access
  # Paths are expanded as a shell would (`paths.expand`).
  assert args.cache_dir == os.path.expandvars(os.path.expanduser(
      argv[0].split("=", 1)[1]))


def _swapped(argv: list[str], model_dir) -> list[str]:
  """The tiny T5 and its T5X-written checkpoint for the README's model and
  checkpoint, `model_dir` for its MODEL_DIR."""
  swapped = []
  for arg in argv:
    if arg.startswith("--gin_file=models/"):
      arg = "--gin_file=models/t5_1_1_tiny.gin"
    elif arg.startswith("--gin.MODEL_DIR="):
      arg = f"--gin.MODEL_DIR='{model_dir}'"
    elif arg.startswith("--gin.INITIAL_CHECKPOINT_PATH="):
      arg = f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path(*T5X_TINY)}'"
    swapped.append(arg)
  return swapped


def _run(entry: str, *extra: str, model_dir) -> int:
  [words] = [w for w in _commands() if f"prompt_tuning.{entry}" in w]
  module, argv = _entry(words)
  try:
    return importlib.import_module(module).main(
        [*_swapped(argv, model_dir), *extra])
  finally:
    gin.clear_config()


@pytest.mark.slow
def test_rte_train_evaluate_infer_run_as_written(tmp_path, local_super_glue):
  """Train validates as written, then trains 2 small steps (the README's
  flags plus overrides); evaluate and infer validate against that run."""
  model_dir = tmp_path / "run"
  assert _run("train", "--validate_only", model_dir=model_dir) == 0
  assert not model_dir.exists()
  small = ["--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8",
           "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
           "--gin.PROMPT_LENGTH=3", "--gin.EVAL_PERIOD=0",
           "--gin.EVAL_MIXTURE_OR_TASK_NAME=None", "--gin.BEST_METRIC=None"]
  assert _run("train", *small, model_dir=model_dir) == 0
  for entry in ("evaluate", "infer"):
    assert _run(entry, "--gin.PROMPT_LENGTH=3", "--validate_only",
                model_dir=model_dir) == 0
