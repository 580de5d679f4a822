"""The README's three commands that evaluate the authors' released prompts
(SST-2, MRPC, RTE; [100, 768], T5 1.1 LM-adapted base), run in-process as
written there, up to the two stops this machine can reach: the base
checkpoint is missing, and the prompt does not fit the tiny model. Neither
writes anything."""

import os
import pathlib
import re
import shlex

import gin
import numpy as np
import pytest

from helpers import REPO_ROOT, shared_dir, shared_path
from prompt_tuning import errors
from prompt_tuning import evaluate

BASE_CHECKPOINT = "/ckpts/t5_1_1_lm100k_base/checkpoint_1100000"
PROMPTS = ("fixtures", "prompts", "t5_1_1_lm100k_base")
T5X_TINY = ("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")


def readme_commands() -> dict[str, tuple[dict[str, str], list[str]]]:
  """{prompt: (environment, argv)} of the authors'-prompt lines in
  docs/glue.md."""
  commands = {}
  for line in (REPO_ROOT / "docs" / "glue.md").read_text().splitlines():
    if "prompt_tuning.evaluate" not in line or "PROMPT_FILE" not in line:
      continue
    words = shlex.split(line)
    start = words.index("-m") + 2
    env = dict(w.split("=", 1) for w in words[:words.index("python")])
    (prompt,) = [w.split("=", 1)[1].strip("'") for w in words
                 if w.startswith("--gin.PROMPT_FILE=")]
    commands[pathlib.Path(prompt).stem] = (env, words[start:])
  return commands


COMMANDS = readme_commands()


def localised(words: list[str], **macros: str) -> list[str]:
  """The README's flags with `../shared` resolved and `macros` replaced."""
  shared = str(shared_dir())
  out = []
  for word in words:
    word = word.replace("../shared", shared)
    name = re.match(r"--gin\.([A-Z_]+)=", word)
    if name and name.group(1) in macros:
      word = f"--gin.{name.group(1)}={macros[name.group(1)]}"
    out.append(word)
  return out


@pytest.fixture(autouse=True)
def _clean_gin():
  yield
  gin.clear_config()


def test_readme_has_the_three_commands_in_the_authors_setting():
  assert sorted(COMMANDS) == ["mrpc", "rte", "sst2"]
  tasks = {"sst2": "taskless_glue_sst2_v200",
           "mrpc": "taskless_glue_mrpc_v200",
           "rte": "taskless_super_glue_rte_v102"}
  for prompt, (_, words) in COMMANDS.items():
    flags = dict(w[len("--gin."):].split("=", 1) for w in words
                 if w.startswith("--gin."))
    assert flags["MIXTURE_OR_TASK_NAME"] == f"'{tasks[prompt]}'"
    assert flags["TASK_FEATURE_LENGTHS"] == "{'inputs': 512, 'targets': 8}"
    assert flags["PROMPT_LENGTH"] == "100"
    assert flags["INITIAL_CHECKPOINT_PATH"] == f"'{BASE_CHECKPOINT}'"
    assert flags["MODEL_DIR"] == "None"
    assert "--gin_file=models/t5_1_1_base.gin" in words
    assert "--gin_file=prompts/from_file.gin" in words
    assert np.load(shared_path(*PROMPTS, f"{prompt}.npy")).shape == (100, 768)


@pytest.mark.parametrize("prompt", ["sst2", "mrpc", "rte"])
def test_missing_base_checkpoint_is_named(tmp_path, monkeypatch, prompt):
  env, words = COMMANDS[prompt]
  for key, value in env.items():
    monkeypatch.setenv(key, value.replace("../shared", str(shared_dir())))
  missing = tmp_path / "t5_1_1_lm100k_base" / "checkpoint_1100000"
  out = tmp_path / "eval"
  args = localised(words, INITIAL_CHECKPOINT_PATH=f"'{missing}'",
                   EVAL_OUTPUT_DIR=f"'{out}'")
  with pytest.raises(errors.ConfigError,
                     match=f"Checkpoint path {re.escape(str(missing))} does "
                     "not exist"):
    evaluate.main(args)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("prompt", ["sst2", "rte"])
def test_prompt_shape_against_the_tiny_model_is_refused(tmp_path, monkeypatch,
                                                        prompt):
  env, words = COMMANDS[prompt]
  for key, value in env.items():
    monkeypatch.setenv(key, value.replace("../shared", str(shared_dir())))
  words = [("--gin_file=models/t5_1_1_tiny.gin"
            if w == "--gin_file=models/t5_1_1_base.gin" else w)
           for w in words]
  out = tmp_path / "eval"
  args = localised(
      words, INITIAL_CHECKPOINT_PATH=f"'{shared_path(*T5X_TINY)}'",
      EVAL_OUTPUT_DIR=f"'{out}'")
  with pytest.raises(errors.ConfigError,
                     match=rf"{prompt}\.npy holds an array of shape "
                     r"\[100, 768\], expected \[100, 4\]"):
    evaluate.main(args)
  assert os.listdir(tmp_path) == []
