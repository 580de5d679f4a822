"""The gin files show the paper's settings as their macros' defaults; they
are `prompt_tuning.paper_defaults`'s values (one owner, the gin copies held
equal to it)."""

import gin
import pytest

from prompt_tuning import gin_utils
from prompt_tuning import paper_defaults
from prompt_tuning.training import optimizers

_RUN = {"TRAIN_STEPS": paper_defaults.TRAIN_STEPS,
        "BATCH_SIZE": paper_defaults.BATCH_SIZE,
        "LEARNING_RATE": paper_defaults.LEARNING_RATE,
        "DROPOUT_RATE": paper_defaults.DROPOUT_RATE,
        "PROMPT_LENGTH": paper_defaults.PROMPT_LENGTH,
        "TASK_FEATURE_LENGTHS": paper_defaults.feature_lengths()}
_READ = {"BATCH_SIZE": paper_defaults.BATCH_SIZE,
         "PROMPT_LENGTH": paper_defaults.PROMPT_LENGTH,
         "TASK_FEATURE_LENGTHS": paper_defaults.feature_lengths()}


@pytest.mark.parametrize("run_file,expected", [
    ("runs/prompt_finetune.gin", _RUN), ("runs/prompt_eval.gin", _READ),
    ("runs/prompt_infer.gin", _READ)])
def test_gin_macros_are_the_papers(run_file, expected):
  gin.clear_config()
  try:
    gin_utils.parse_gin(
        ["models/t5_1_1_base.gin", "prompts/prompt.gin", run_file],
        [f"{name} = 'x'" for name in ("MODEL_DIR", "MIXTURE_OR_TASK_NAME",
                                      "INITIAL_CHECKPOINT_PATH")])
    shown = {name: gin_utils.query_macro(name) for name in expected}
  finally:
    gin.clear_config()
  assert shown == expected


def test_adafactor_default_is_the_papers():
  assert optimizers.adafactor.__defaults__[0] == paper_defaults.LEARNING_RATE
