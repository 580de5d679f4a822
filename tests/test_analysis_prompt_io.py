"""Prompt export/import: a trained prompt round-trips through a `.npy` file
into a new run via prompts/from_file.gin; banks, deep prompts and the
authors' prompt files load; width mismatches are clear errors."""


import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import T5_VOCAB_SIZE, initial_params, load_script, shared_path
from helpers import rte_train_cfg, tiny_model
from prompt_tuning import gin_utils
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.prompts import initializers
from prompt_tuning.training import run_settings
from prompt_tuning.training import trainer

RTE = "taskless_super_glue_rte_v102"
LENGTHS = {"inputs": 32, "targets": 8}
AUTHORS = ("fixtures", "prompts")


@pytest.fixture(autouse=True)
def local_data(local_super_glue):
  return local_super_glue


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def width4_model(prompt_length=3):
  """One layer each side, embedding width 4 like models/t5_1_1_tiny.gin."""
  return tiny_model("prompt", prompt_length=prompt_length,
                    vocab_size=T5_VOCAB_SIZE, emb_dim=4,
                    num_encoder_layers=1, num_decoder_layers=1)


def _prompt_of(params):
  return np.asarray(param_tree.flatten_params(
      jax.device_get(params))["prompt/prompt"])


@pytest.mark.slow
def test_trained_prompt_round_trips_into_another_model(tmp_path, clean_gin):
  result = trainer.train(
      model=width4_model(), train_dataset_cfg=rte_train_cfg(LENGTHS),
      train_steps=2, model_dir=str(tmp_path / "run"),
      checkpoint_cfg=run_settings.CheckpointConfig(period=1), progress=False)
  trained = _prompt_of(result.state.params)

  prompt, name, step = prompt_io.export_prompt(tmp_path / "run")
  assert (name, step, prompt.shape, prompt.dtype) == (
      "prompt/prompt", 2, (3, 4), np.float32)
  np.testing.assert_array_equal(prompt, trained)
  first, _, _ = prompt_io.export_prompt(tmp_path / "run", step=1)
  assert not np.array_equal(first, prompt)
  path = prompt_io.save_prompt(tmp_path / "rte.npy", prompt)

  # Into a different model of the same width (the 2-layer tiny T5 1.1),
  # exactly as the README says: prompts/from_file.gin.
  flags = prompt_io.from_file_flags(path, prompt)
  assert flags == ["--gin_file=prompts/from_file.gin",
                   f"--gin.PROMPT_FILE=\"'{path}'\"", "--gin.PROMPT_LENGTH=3"]
  gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "prompts/from_file.gin"],
                      [f"PROMPT_FILE = '{path}'", "PROMPT_LENGTH = 3"])
  model = gin_utils.configured_model()
  assert model.module.config.num_encoder_layers == 2
  params = initial_params(model, jax.random.PRNGKey(7))
  np.testing.assert_array_equal(_prompt_of(params), trained)

  # The command lines: export, then import against the gin model.
  _script("export_prompt").main([f"--model_dir={tmp_path / 'run'}",
                                 f"--output={tmp_path / 'cli.npy'}",
                                 "--step=1"])
  np.testing.assert_array_equal(np.load(tmp_path / "cli.npy"), first)
  gin.clear_config()
  _script("import_prompt").main([
      f"--prompt={tmp_path / 'run'}", f"--output={tmp_path / 'in.npy'}",
      "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=prompts/prompt.gin"])
  np.testing.assert_array_equal(np.load(tmp_path / "in.npy"), trained)
  with pytest.raises(prompt_io.PromptShapeError, match="width 4"):
    _script("import_prompt").main([f"--prompt={path}",
                                   f"--output={tmp_path / 'x.npy'}",
                                   "--embed_dim=768"])


_script = load_script


def _write_fake_checkpoint(model_dir, step, trainable):
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(model_dir / "checkpoints" / str(step) / "state",
                      {"step": np.int32(step), "trainable": trainable})


def test_exports_banks_and_deep_prompts(tmp_path):
  bank = np.random.RandomState(0).randn(3, 5, 8).astype(np.float32)
  _write_fake_checkpoint(tmp_path / "bank", 4, {"prompt": {"prompt": bank}})
  value, name, step = prompt_io.export_prompt(tmp_path / "bank")
  assert (name, step) == ("prompt/prompt", 4)
  np.testing.assert_array_equal(value, bank)

  prefix = np.ones((2, 2, 5, 6), np.float32)
  _write_fake_checkpoint(tmp_path / "deep", 7, {
      "deep_prompt": {"encoder": {"prefix": prefix}}})
  value, name, _ = prompt_io.export_prompt(tmp_path / "deep")
  assert name == "deep_prompt/encoder/prefix" and value.shape == (2, 2, 5, 6)
  with pytest.raises(KeyError, match="holds no prompt/prompt"):
    prompt_io.export_prompt(tmp_path / "deep", name="prompt/prompt")
  with pytest.raises(FileNotFoundError, match=r"step 3 .* have \[7\]"):
    prompt_io.export_prompt(tmp_path / "deep", step=3)


def test_authors_prompts_load_and_width_mismatch_is_clear():
  rte = prompt_io.load_prompt(shared_path(*AUTHORS, "t5_1_1_lm100k_base",
                                          "rte.npy"))
  assert rte.shape == (100, 768) and rte.dtype == np.float32
  prompt_io.check_portable(rte, 768, length=100)
  with pytest.raises(prompt_io.PromptShapeError,
                     match="embedding width 768 .* model's is 4"):
    prompt_io.check_portable(rte, 4)
  with pytest.raises(prompt_io.PromptShapeError, match="PROMPT_LENGTH=100"):
    prompt_io.check_portable(rte, 768, length=20)

  path = shared_path(*AUTHORS, "prompt_5x256.npy")
  small = prompt_io.load_prompt(path)
  assert small.shape == (5, 256) and small.dtype == np.float32
  np.testing.assert_allclose(small, np.load(path), rtol=1e-6)
  # The from-file initialiser takes the float64 file, also for a bank.
  init = initializers.from_file(path)
  np.testing.assert_array_equal(np.asarray(init(None, (5, 256))), small)
  assert np.asarray(init(None, (2, 5, 256))).shape == (2, 5, 256)
  with pytest.raises(ValueError, match="expected"):
    init(None, (5, 768))
