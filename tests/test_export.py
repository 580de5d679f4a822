"""`python -m prompt_tuning.export`: checkpoints as Hugging Face T5
directories and prompts as PEFT adapters, read back by our own readers."""

import json

import gin
import numpy as np
import orbax.checkpoint as ocp
import pytest

import helpers
from prompt_tuning import cli
from prompt_tuning import export
from prompt_tuning.analysis import peft_prompt
from prompt_tuning.analysis import prompt_io
from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import hf_export
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.data import locations
from prompt_tuning.models import config as config_lib


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _flat(path, config=None):
  shapes = None if config is None else param_tree.t5_param_shapes(config)
  return param_tree.flatten_params(sharded.read_params(path, shapes))


def test_t5x_fixture_exports_to_hf_and_reads_back_identical(tmp_path):
  source = helpers.shared_path(*helpers.T5X_TINY)
  vocab = helpers.shared_path(*locations.VOCAB_IN_SHARED)
  out = tmp_path / "hf"
  assert export.main(["--to=hf", f"--checkpoint={source}", f"--output={out}",
                      f"--vocab={vocab}",
                      "--gin_file=models/t5_1_1_tiny.gin"]) == 0
  written = json.loads((out / hf.CONFIG_FILE).read_text())
  assert written["feed_forward_proj"] == "gated-gelu"
  assert written["tie_word_embeddings"] is False
  assert written["relative_attention_max_distance"] == 8
  assert hf.hf_config_to_t5_config(written) == helpers.T5X_TINY_CONFIG
  assert (out / "spiece.model").read_bytes() == vocab.read_bytes()
  assert json.loads((out / "tokenizer_config.json").read_text())[
      "extra_ids"] == 100
  original = _flat(source)
  back = _flat(out, helpers.T5X_TINY_CONFIG)
  assert sorted(back) == sorted(original)
  for name, value in original.items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_shapes_imply_the_config_and_tied_logits_write_no_head(tmp_path):
  config = config_lib.T5Config(
      vocab_size=40, emb_dim=8, num_heads=2, head_dim=3, mlp_dim=12,
      num_encoder_layers=2, num_decoder_layers=1,
      mlp_activations=config_lib.RELU, logits_via_embedding=True,
      relative_attention_num_buckets=5)
  rng = np.random.default_rng(0)
  flat = {n: rng.normal(size=s.shape).astype(np.float32) for n, s in
          param_tree.flatten_params(param_tree.t5_param_shapes(config)).items()}
  assert hf_export.infer_t5_config(flat) == config
  hf_export.write_hf_checkpoint(tmp_path, flat, config)
  written = json.loads((tmp_path / hf.CONFIG_FILE).read_text())
  assert written["feed_forward_proj"] == "relu"
  assert written["tie_word_embeddings"] and written["scale_decoder_outputs"]
  assert not (tmp_path / "spiece.model").exists()
  with sharded.open_checkpoint(tmp_path) as record:
    assert record.config == config
    assert hf.LM_HEAD not in record.sources
  back = _flat(tmp_path, config)
  for name, value in flat.items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_every_t5_name_maps_and_a_prompt_is_refused():
  config = helpers.T5X_TINY_CONFIG
  for name in param_tree.flatten_params(param_tree.t5_param_shapes(config)):
    hf_name, transpose = hf_export.hf_tensor_name(name)
    assert transpose == name.endswith(("kernel", "rel_embedding"))
    assert hf_name.endswith(".weight")
  with pytest.raises(ValueError, match="not a T5 parameter"):
    hf_export.hf_tensor_name("prompt/prompt")


def test_gated_exact_gelu_has_no_hf_equivalent():
  config = config_lib.T5Config(mlp_activations=("gelu_exact", "linear"))
  with pytest.raises(ValueError, match="no Hugging Face T5 equivalent"):
    hf_export.t5_config_to_hf_config(config)


def test_prompt_to_peft_adapter_and_back(tmp_path):
  base = tmp_path / "base"
  config = helpers.T5X_TINY_CONFIG
  hf_export.write_hf_checkpoint(base, _flat(helpers.shared_path(
      *helpers.T5X_TINY)), config)
  prompt = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
  npy = tmp_path / "prompt.npy"
  np.save(npy, prompt)
  out = tmp_path / "adapter"
  assert export.main(["--to=peft", f"--prompt={npy}", f"--base_model={base}",
                      f"--output={out}"]) == 0
  content = json.loads((out / peft_prompt.ADAPTER_CONFIG_FILE).read_text())
  assert content["peft_type"] == "PROMPT_TUNING"
  assert content["task_type"] == "SEQ_2_SEQ_LM"
  assert (content["num_virtual_tokens"], content["token_dim"],
          content["num_transformer_submodules"]) == (5, 4, 1)
  assert content["base_model_name_or_path"] == str(base)
  np.testing.assert_array_equal(peft_prompt.read_peft_prompt(out), prompt)
  with pytest.raises(peft_prompt.PeftAdapterError, match="embedding is 8"):
    peft_prompt.read_peft_prompt(out, embed_dim=8)
  # The adapter is a prompt source: import_prompt.py gives a from_file.gin
  # prompt of its rows.
  np.testing.assert_array_equal(prompt_io.resolve_prompt(out), prompt)
  helpers.load_script("import_prompt").main(
      [f"--prompt={out}", f"--output={tmp_path / 'in.npy'}", "--embed_dim=4"])
  np.testing.assert_array_equal(np.load(tmp_path / "in.npy"), prompt)


def test_two_submodule_adapter_gives_its_encoder_rows(tmp_path):
  # PEFT's default for seq2seq: [2 * tokens, dim], encoder rows first.
  table = np.arange(24, dtype=np.float32).reshape(6, 4)
  peft_prompt.write_peft_prompt(tmp_path, table, helpers.T5X_TINY_CONFIG,
                                "base")
  path = tmp_path / peft_prompt.ADAPTER_CONFIG_FILE
  content = json.loads(path.read_text())
  content.update(num_virtual_tokens=3, num_transformer_submodules=2)
  path.write_text(json.dumps(content))
  np.testing.assert_array_equal(peft_prompt.read_peft_prompt(tmp_path),
                                table[:3])
  content["peft_type"] = "LORA"
  path.write_text(json.dumps(content))
  with pytest.raises(peft_prompt.PeftAdapterError, match="LORA"):
    peft_prompt.read_peft_prompt(tmp_path)


def test_run_base_path_from_checkpoint_meta_then_config_gin(tmp_path):
  meta = tmp_path / "checkpoints" / "7" / "meta"
  meta.mkdir(parents=True)
  (tmp_path / "config.gin").write_text(
      "INITIAL_CHECKPOINT_PATH = '/ckpts/from_gin'\n")
  assert export.run_base_path(str(tmp_path), 7, "checkpoints") == (
      "/ckpts/from_gin")
  (meta / "metadata").write_text(json.dumps(
      {"frozen_base": {"path": "/ckpts/recorded", "shapes": {}}}))
  assert export.run_base_path(str(tmp_path), 7, "checkpoints") == (
      "/ckpts/recorded")
  (tmp_path / "config.gin").unlink()
  with pytest.raises(FileNotFoundError, match="records no frozen base"):
    export.run_base_path(str(tmp_path), 8, "best")


def test_usage_errors():
  with pytest.raises(cli.UsageError, match="--to=hf or --to=peft"):
    export.main(["--output=/tmp/x"])
  with pytest.raises(cli.UsageError, match="needs --checkpoint"):
    export.main(["--to=hf", "--output=/tmp/x"])
  with pytest.raises(cli.UsageError, match="needs --prompt"):
    export.main(["--to=peft", "--output=/tmp/x"])
  with pytest.raises(cli.UsageError, match="neither a training run"):
    export.main(["--to=peft", "--prompt=/tmp/p.json", "--base_model=/x",
                 "--output=/tmp/x", "--gin_file=models/t5_1_1_tiny.gin"])


def test_run_dir_exports_its_base_with_trained_t5_params_and_prompt(
    tmp_path, capsys):
  source = helpers.shared_path(*helpers.T5X_TINY)
  base = _flat(source)
  norm = np.full(base["encoder/encoder_norm/scale"].shape, 0.5, np.float32)
  prompt = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
  run = tmp_path / "run"
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(run / "checkpoints" / "5" / "state", {
        "step": np.int32(5), "trainable": {
            "prompt": {"prompt": prompt},
            "encoder": {"encoder_norm": {"scale": norm}}}})
  (run / "config.gin").write_text(f"INITIAL_CHECKPOINT_PATH = '{source}'\n")
  out = tmp_path / "hf"
  assert export.main(["--to=hf", f"--checkpoint={run}", f"--output={out}",
                      "--vocab=none", "--gin_file=models/t5_1_1_tiny.gin"]
                     ) == 0
  assert "Left out the run's trained prompt/prompt" in capsys.readouterr().out
  back = _flat(out, helpers.T5X_TINY_CONFIG)
  np.testing.assert_array_equal(back["encoder/encoder_norm/scale"], norm)
  for name, value in base.items():
    if name != "encoder/encoder_norm/scale":
      np.testing.assert_array_equal(back[name], value, err_msg=name)
  adapter = tmp_path / "adapter"
  assert export.main(["--to=peft", f"--prompt={run}", f"--base_model={out}",
                      f"--output={adapter}"]) == 0
  np.testing.assert_array_equal(peft_prompt.read_peft_prompt(adapter), prompt)
