"""The main job: `python -m prompt_tuning.predict` over the T5X-written
checkpoint, and the gin command-line handling shared by entry points."""

import gin
import pytest

from helpers import shared_path
from prompt_tuning import cli
from prompt_tuning import gin_utils
from prompt_tuning import predict
from prompt_tuning.data import locations


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _argv(*extra):
  ckpt = shared_path("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")
  return ["--gin_file=models/t5_1_1_tiny.gin",
          f"--gin.INITIAL_CHECKPOINT_PATH='{ckpt}'",
          "--vocab", str(shared_path(*locations.VOCAB_IN_SHARED)),
          "--max_decode_length=6", *extra]


def test_predict_decodes_and_ranks_choices(capsys):
  assert predict.main(_argv(
      "--input=hypothesis: A cat sat. premise: The cat sat on the mat.",
      "--input=question: is the sky blue? passage: It is.",
      "--choices=entailment,not_entailment")) == 0
  out = capsys.readouterr().out
  assert out.count("prediction: ") == 2 and out.count("choice:     ") == 2
  # The printed choice is the best-scoring one.
  for block in out.split("input:")[1:]:
    scores = block.split("scores:")[1].splitlines()[0].split(",")
    best = scores[0].split("=")[0].strip()
    assert f"choice:     {best}" in block


def test_predict_rejects_inputs_longer_than_the_feature_length():
  with pytest.raises(ValueError, match="longer than the feature length 4"):
    predict.main(_argv("--input=" + "many words " * 10, "--input_length=4"))


def test_malformed_gin_binding_is_a_clear_error():
  with pytest.raises(cli.UsageError, match="write --gin.NAME=VALUE"):
    cli.rewrite_gin_args(["--gin.TRAIN_STEPS"])
  with pytest.raises(gin_utils.GinConfigError, match="Malformed or unknown"):
    gin_utils.parse_gin(["models/t5_1_1_tiny.gin"], ["t5_config.T5Config.nope = 3"])


def test_unknown_gin_file_is_a_clear_error():
  with pytest.raises(gin_utils.GinConfigError, match="not found"):
    gin_utils.parse_gin(["models/t5_9_small.gin"], [])
