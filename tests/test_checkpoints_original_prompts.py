"""Prompts from T5X prompt runs: the original prompt-tuning code's layouts.

The original run is a stand-in made here, in tmp_path: the T5X-written tiny
fixture's parameters (shared/fixtures/PROVENANCE.md) plus a [5, 4] prompt at
the original's name `encoder/prompt/prompt/prompt`, written with our T5X
writer (`t5x.save_t5x_checkpoint`, the layout T5X writes) at step 7; beside
it the original's `numpy_checkpoints/checkpoint_<step>/` folders, one file
per parameter named by its '.'-joined path, written as the original does
(`np.save` into an open file: no `.npy` suffix), for steps 5 and 7, and a
`.tmp-<time>` folder of an unfinished save.
"""

from helpers import T5X_TINY, T5X_TINY_CONFIG, load_script, shared_path
import gin
import numpy as np
import pytest

from prompt_tuning import checkpoints
from prompt_tuning import gin_utils
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import original_prompts
from prompt_tuning.checkpoints import prompt_names
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import t5x
from prompt_tuning.checkpoints import validation

ORIGINAL = prompt_names.ORIGINAL_PROMPT
PROMPTS = {step: np.random.default_rng(step).normal(size=(5, 4))
           .astype(np.float32) for step in (5, 7)}


def _numpy_save(folder, name, value):
  folder.mkdir(parents=True, exist_ok=True)
  with open(folder / name.replace("/", "."), "wb") as f:
    np.save(f, value)


@pytest.fixture(scope="module")
def original_run(tmp_path_factory):
  """(model_dir, checkpoint_7 dir): see the module docstring."""
  model_dir = tmp_path_factory.mktemp("original_run")
  flat = checkpoints.flatten_params(sharded.read_params(
      shared_path(*T5X_TINY), checkpoints.t5_param_shapes(T5X_TINY_CONFIG)))
  flat[ORIGINAL] = PROMPTS[7]
  ckpt = t5x.save_t5x_checkpoint(model_dir / "t5x", flat, 7)
  numpy_dir = model_dir / "numpy" / prompt_names.NUMPY_CHECKPOINTS
  for step, prompt in PROMPTS.items():
    _numpy_save(numpy_dir / f"checkpoint_{step}", ORIGINAL, prompt)
  _numpy_save(numpy_dir / "checkpoint_9.tmp-1700000000", ORIGINAL,
              np.zeros((5, 4), np.float32))
  return model_dir, ckpt


def test_prompt_read_from_a_t5x_checkpoint(original_run):
  model_dir, ckpt = original_run
  for path in (ckpt, ckpt / t5x.CHECKPOINT_FILE, model_dir / "t5x"):
    assert original_prompts.is_prompt_run(path)
    value, name, step = original_prompts.read_prompt(path)
    assert (name, step) == (ORIGINAL, 7)
    np.testing.assert_array_equal(value, PROMPTS[7])
  with pytest.raises(FileNotFoundError, match="no T5X checkpoint_3"):
    original_prompts.read_prompt(model_dir / "t5x", step=3)
  with pytest.raises(original_prompts.PromptSourceError, match="holds no x"):
    original_prompts.read_prompt(ckpt, name="x")


def test_prompt_read_from_numpy_checkpoints(original_run):
  numpy_run = original_run[0] / "numpy"
  value, name, step = original_prompts.read_prompt(numpy_run)
  assert (name, step) == (ORIGINAL, 7)  # The .tmp folder is unfinished.
  np.testing.assert_array_equal(value, PROMPTS[7])
  folder = numpy_run / prompt_names.NUMPY_CHECKPOINTS
  assert sorted(original_prompts.numpy_checkpoint_steps(folder)) == [5, 7]
  value, _, step = original_prompts.read_prompt(folder, step=5)
  assert step == 5
  np.testing.assert_array_equal(value, PROMPTS[5])
  one = folder / "checkpoint_5"
  np.testing.assert_array_equal(
      original_prompts.read_prompt(one)[0], PROMPTS[5])
  np.testing.assert_array_equal(original_prompts.read_prompt(
      one / "encoder.prompt.prompt.prompt")[0], PROMPTS[5])


def test_our_t5x_export_is_a_source_too(tmp_path):
  ckpt = t5x.save_t5x_checkpoint(
      tmp_path, {prompt_names.SOFT_PROMPT: PROMPTS[5],
                 "token_embedder/embedding": np.zeros((8, 4))}, 2)
  value, name, step = original_prompts.read_prompt(ckpt)
  assert (name, step) == (prompt_names.SOFT_PROMPT, 2)
  np.testing.assert_array_equal(value, PROMPTS[5])


def test_import_script_takes_an_original_run(original_run, tmp_path):
  model_dir, ckpt = original_run
  for i, source in enumerate((ckpt, model_dir / "numpy")):
    output = tmp_path / f"p{i}.npy"
    load_script("import_prompt").main(
        [f"--prompt={source}", f"--output={output}", "--embed_dim=4"])
    np.testing.assert_array_equal(np.load(output), PROMPTS[7])
  np.testing.assert_array_equal(
      prompt_io.resolve_prompt(model_dir / "numpy", step=5), PROMPTS[5])
  with pytest.raises(prompt_io.PromptShapeError, match="width 4"):
    load_script("import_prompt").main(
        [f"--prompt={ckpt}", f"--output={tmp_path / 'x.npy'}",
         "--embed_dim=768"])


def test_from_t5x_run_gin_initialises_the_prompt(original_run):
  _, ckpt = original_run
  gin.clear_config()
  try:
    gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "prompts/from_t5x_run.gin"],
                        [f"PROMPT_CHECKPOINT = '{ckpt}'", "PROMPT_LENGTH = 5"])
    model = gin_utils.configured_model()
    prompt = model.module.prompt_init(None, (5, 4), None)
    np.testing.assert_array_equal(np.asarray(prompt), PROMPTS[7])
    bank = model.module.prompt_init(None, (2, 5, 4), None)
    np.testing.assert_array_equal(np.asarray(bank)[1], PROMPTS[7])
    with pytest.raises(Exception, match=r"PROMPT_LENGTH"):
      model.module.prompt_init(None, (3, 4), None)
  finally:
    gin.clear_config()


def test_loading_a_prompt_run_as_the_model_names_the_fix(original_run):
  _, ckpt = original_run
  with pytest.raises(validation.ParamMismatchError) as error:
    sharded.read_params(ckpt, checkpoints.t5_param_shapes(T5X_TINY_CONFIG))
  message = str(error.value)
  assert f"{ORIGINAL}: [5, 4]" in message
  assert "holds a prompt" in message and "prompt-tuning run" in message
  assert prompt_names.FROM_T5X_RUN_GIN in message
  assert prompt_names.IMPORT_SCRIPT in message
  # Only the prompt differs: no advice about the model's size or version.
  assert "size (small, base" not in message


def test_a_missing_frozen_prompt_is_named():
  shapes = {"token_embedder": {"embedding": (8, 4)},
            "prompt": {"prompt": (5, 4)}}
  with pytest.raises(validation.ParamMismatchError,
                     match=r"expects a prompt \(prompt/prompt: \[5, 4\]\)"):
    validation.check_params(shapes,
                            {"token_embedder": {"embedding": np.zeros((8, 4))}},
                            source="x")
  # Other differences keep the size / version advice.
  with pytest.raises(validation.ParamMismatchError, match="size \\(small"):
    validation.check_params(shapes, {"prompt": {"prompt": np.zeros((5, 4))}},
                            source="x")
