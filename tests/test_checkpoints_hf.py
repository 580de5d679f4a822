"""Tests for reading Hugging Face T5 checkpoints to the host (no PyTorch).

The tiny checkpoints in testdata/ are written by
scripts/make_hf_reference.py with transformers.
"""

import dataclasses
import json
import pathlib
import shutil

from helpers import TESTDATA
import ml_dtypes
import numpy as np
import pytest
from safetensors import numpy as st_numpy

from prompt_tuning import checkpoints
from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import sharded
from prompt_tuning.models.config import GATED_GELU, RELU, T5Config

T5_1_0 = TESTDATA / "hf_t5_1_0_tiny"
T5_1_1 = TESTDATA / "hf_t5_1_1_tiny"
TINY = dict(vocab_size=128, emb_dim=32, num_heads=4, head_dim=4, mlp_dim=48,
            num_encoder_layers=2, num_decoder_layers=3, dropout_rate=0.1,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16, layer_norm_epsilon=1e-6)
EXPECTED_CONFIGS = {
    "hf_t5_1_0_tiny": T5Config(**TINY, mlp_activations=RELU,
                               logits_via_embedding=True),
    "hf_t5_1_1_tiny": T5Config(**TINY, mlp_activations=GATED_GELU,
                               logits_via_embedding=False),
}
BOTH = pytest.mark.parametrize("model_dir", [T5_1_0, T5_1_1],
                               ids=lambda p: p.name)


def _copy(model_dir: pathlib.Path, dest: pathlib.Path,
          tensors: dict[str, np.ndarray] | None = None,
          config_updates: dict | None = None) -> pathlib.Path:
  """Copies a tiny checkpoint, optionally replacing tensors / config keys."""
  dest.mkdir()
  with (model_dir / "config.json").open() as f:
    config = json.load(f)
  for key, value in (config_updates or {}).items():
    if value is None:
      config.pop(key, None)
    else:
      config[key] = value
  (dest / "config.json").write_text(json.dumps(config))
  if tensors is None:
    shutil.copy(model_dir / "model.safetensors", dest)
  else:
    st_numpy.save_file(tensors, dest / "model.safetensors")
  return dest


def _tensors(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
  return st_numpy.load_file(model_dir / "model.safetensors")


def _load(model_dir: pathlib.Path) -> tuple[T5Config, dict]:
  """(the checkpoint's own config, every parameter on the host)."""
  with sharded.open_checkpoint(model_dir) as record:
    return record.config, record.read_all()


@BOTH
def test_config_maps(model_dir):
  config, _ = _load(model_dir)
  assert config == EXPECTED_CONFIGS[model_dir.name]


@BOTH
def test_params_match_tree_spec(model_dir):
  config, params = _load(model_dir)
  spec = checkpoints.flatten_params(checkpoints.t5_param_shapes(config))
  flat = checkpoints.flatten_params(params)
  assert sorted(flat) == sorted(spec)
  for name, array in flat.items():
    assert isinstance(array, np.ndarray), name
    assert array.dtype == np.float32, name
    assert array.shape == spec[name].shape, name
  has_head = "decoder/logits_dense/kernel" in flat
  assert has_head == (model_dir == T5_1_1)
  assert ("encoder/layers_0/mlp/wi/kernel" in flat) == (model_dir == T5_1_0)


@BOTH
def test_values_are_the_hf_tensors_transposed(model_dir):
  _, params = _load(model_dir)
  flat = checkpoints.flatten_params(params)
  tensors = _tensors(model_dir)
  np.testing.assert_array_equal(flat["token_embedder/embedding"],
                                tensors["shared.weight"])
  np.testing.assert_array_equal(
      flat["encoder/relpos_bias/rel_embedding"],
      tensors["encoder.block.0.layer.0.SelfAttention."
              "relative_attention_bias.weight"].T)
  np.testing.assert_array_equal(
      flat["decoder/layers_2/encoder_decoder_attention/out/kernel"],
      tensors["decoder.block.2.layer.1.EncDecAttention.o.weight"].T)
  np.testing.assert_array_equal(
      flat["decoder/layers_1/pre_cross_attention_layer_norm/scale"],
      tensors["decoder.block.1.layer.1.layer_norm.weight"])
  if model_dir == T5_1_1:
    np.testing.assert_array_equal(flat["decoder/logits_dense/kernel"],
                                  tensors["lm_head.weight"].T)
  # Every tensor in the file is used, under the name the inverse mapping
  # gives back.
  special = {"shared.weight": ("token_embedder/embedding", False),
             "lm_head.weight": ("decoder/logits_dense/kernel", True)}
  for name, array in tensors.items():
    ours, transposed = hf.hf_name_to_param_name(name) or special[name]
    assert hf.param_name_to_hf_name(ours) == name
    np.testing.assert_array_equal(flat[ours], array.T if transposed else array)
  assert len(tensors) == len(flat)


@BOTH
def test_sharded_index_loads_identically(model_dir, tmp_path):
  tensors = _tensors(model_dir)
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  sharded = tmp_path / "sharded"
  sharded.mkdir()
  shutil.copy(model_dir / "config.json", sharded)
  weight_map = {}
  for shard, shard_names in shards.items():
    st_numpy.save_file({n: tensors[n] for n in shard_names}, sharded / shard)
    weight_map.update({n: shard for n in shard_names})
  total = sum(a.nbytes for a in tensors.values())
  (sharded / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {"total_size": total}, "weight_map": weight_map}))

  config, params = _load(sharded)
  want_config, want_params = _load(model_dir)
  assert config == want_config
  flat, want = (checkpoints.flatten_params(params),
                checkpoints.flatten_params(want_params))
  assert sorted(flat) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(flat[name], want[name])


def test_missing_shard_is_a_clear_error(tmp_path):
  sharded = _copy(T5_1_0, tmp_path / "sharded")
  (sharded / "model.safetensors").unlink()
  weight_map = {n: "model-00001-of-00001.safetensors" for n in _tensors(T5_1_0)}
  (sharded / "model.safetensors.index.json").write_text(
      json.dumps({"weight_map": weight_map}))
  with pytest.raises(FileNotFoundError,
                     match="model-00001-of-00001.safetensors"):
    _load(sharded)


def test_bfloat16_tensors_are_cast_to_float32(tmp_path):
  tensors = {n: a.astype(ml_dtypes.bfloat16)
             for n, a in _tensors(T5_1_1).items()}
  bf16 = _copy(T5_1_1, tmp_path / "bf16", tensors=tensors)
  _, params = _load(bf16)
  kernel = params["encoder"]["layers_0"]["mlp"]["wi_1"]["kernel"]
  assert kernel.dtype == np.float32
  np.testing.assert_array_equal(
      kernel, tensors["encoder.block.0.layer.1.DenseReluDense.wi_1.weight"]
      .astype(np.float32).T)


def test_missing_tensor_names_the_parameter(tmp_path):
  tensors = _tensors(T5_1_0)
  del tensors["encoder.block.1.layer.0.SelfAttention.k.weight"]
  broken = _copy(T5_1_0, tmp_path / "broken", tensors=tensors)
  with pytest.raises(checkpoints.ParamMismatchError) as error:
    _load(broken)
  message = str(error.value)
  assert "1 missing" in message
  assert "encoder/layers_1/attention/key/kernel" in message
  assert "encoder.block.1.layer.0.SelfAttention.k.weight" in message
  assert str(broken) in message


def test_unknown_tensor_is_unexpected(tmp_path):
  tensors = _tensors(T5_1_0)
  tensors["encoder.block.0.layer.0.SelfAttention.q.bias"] = np.zeros(
      16, np.float32)
  broken = _copy(T5_1_0, tmp_path / "extra", tensors=tensors)
  with pytest.raises(checkpoints.ParamMismatchError,
                     match=r"encoder\.block\.0\.layer\.0\.SelfAttention\.q\."
                     r"bias: \[16\]"):
    _load(broken)


def test_unused_cross_attention_bias_is_ignored(tmp_path):
  # Old T5 1.0 checkpoints carry this tensor; transformers never uses it.
  tensors = _tensors(T5_1_0)
  tensors["decoder.block.0.layer.1.EncDecAttention."
          "relative_attention_bias.weight"] = np.zeros((8, 4), np.float32)
  old = _copy(T5_1_0, tmp_path / "old", tensors=tensors)
  _, params = _load(old)
  assert len(checkpoints.flatten_params(params)) == 60


def test_wrong_model_config_lists_every_difference():
  config_1_1 = EXPECTED_CONFIGS["hf_t5_1_1_tiny"]
  with pytest.raises(checkpoints.ParamMismatchError) as error:
    checkpoints.read_params(
        T5_1_0, checkpoints.t5_param_shapes(config_1_1))
  message = str(error.value)
  # 5 layers x (wi_0, wi_1) + logits_dense missing; 5 x wi unexpected.
  assert "11 missing" in message
  assert "5 in the checkpoint but not expected" in message
  assert "decoder/layers_2/mlp/wi_1/kernel" in message
  assert "encoder/layers_0/mlp/wi/kernel: [32, 48]" in message
  assert "decoder/logits_dense/kernel (HF lm_head.weight)" in message
  assert "mlp_activations" in message
  assert "logits_via_embedding=True" in message
  assert "hf_t5_1_0_tiny" in message


def test_wrong_model_size_reports_shapes():
  small = dataclasses.replace(EXPECTED_CONFIGS["hf_t5_1_0_tiny"], mlp_dim=64)
  with pytest.raises(checkpoints.ParamMismatchError) as error:
    sharded.read_params(T5_1_0, checkpoints.t5_param_shapes(small))
  message = str(error.value)
  assert "10 with the wrong shape" in message
  assert ("encoder/layers_0/mlp/wo/kernel (HF encoder.block.0.layer.1."
          "DenseReluDense.wo.weight): checkpoint [48, 32], expected [64, 32]"
          in message)


def test_transformers4_untied_config_requires_lm_head(tmp_path):
  tensors = _tensors(T5_1_1)
  del tensors["lm_head.weight"]
  v4 = _copy(T5_1_1, tmp_path / "v4", tensors=tensors,
             config_updates={"scale_decoder_outputs": None,
                             "tie_word_embeddings": False})
  with pytest.raises(checkpoints.ParamMismatchError,
                     match=r"decoder/logits_dense/kernel \(HF lm_head"):
    _load(v4)


def test_transformers5_unscaled_head_tied_to_embedding(tmp_path):
  # transformers 5 leaves out an lm_head equal to the embedding and records
  # tie_word_embeddings=true, scale_decoder_outputs=false.
  tensors = _tensors(T5_1_1)
  del tensors["lm_head.weight"]
  v5 = _copy(T5_1_1, tmp_path / "v5", tensors=tensors,
             config_updates={"scale_decoder_outputs": False,
                             "tie_word_embeddings": True})
  config, params = _load(v5)
  assert not config.logits_via_embedding
  np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                tensors["shared.weight"].T)


def test_scaled_logits_with_a_separate_head_are_rejected(tmp_path):
  tensors = _tensors(T5_1_0)
  tensors["lm_head.weight"] = tensors["shared.weight"] + 1.0
  odd = _copy(T5_1_0, tmp_path / "odd", tensors=tensors)
  with pytest.raises(ValueError, match="lm_head.weight differs"):
    _load(odd)


def test_differing_embedding_copies_are_rejected(tmp_path):
  tensors = _tensors(T5_1_0)
  tensors["decoder.embed_tokens.weight"] = tensors["shared.weight"] * 2
  odd = _copy(T5_1_0, tmp_path / "odd", tensors=tensors)
  with pytest.raises(ValueError, match="decoder.embed_tokens.weight differs"):
    _load(odd)


def test_tied_lm_head_copy_is_accepted(tmp_path):
  tensors = _tensors(T5_1_0)
  tensors["lm_head.weight"] = tensors["shared.weight"]
  tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"]
  copy = _copy(T5_1_0, tmp_path / "copy", tensors=tensors)
  _, params = _load(copy)
  assert "logits_dense" not in params["decoder"]


# Key facts of published config.json files (not the whole files).
_T5_1_0_SMALL = {"model_type": "t5", "d_ff": 2048, "d_kv": 64, "d_model": 512,
                 "num_heads": 8, "num_layers": 6, "vocab_size": 32128,
                 "relative_attention_num_buckets": 32, "dropout_rate": 0.1,
                 "layer_norm_epsilon": 1e-6, "is_encoder_decoder": True}
_FLAN_T5_BASE = {"model_type": "t5", "d_ff": 2048, "d_kv": 64, "d_model": 768,
                 "num_heads": 12, "num_layers": 12, "num_decoder_layers": 12,
                 "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
                 "tie_word_embeddings": False,
                 "relative_attention_num_buckets": 32,
                 "relative_attention_max_distance": 128,
                 "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6}


def test_old_t5_1_0_config_uses_transformers_defaults():
  config = hf.hf_config_to_t5_config(_T5_1_0_SMALL)
  assert config == T5Config(
      vocab_size=32128, emb_dim=512, num_heads=8, head_dim=64, mlp_dim=2048,
      num_encoder_layers=6, num_decoder_layers=6, mlp_activations=RELU,
      dropout_rate=0.1, logits_via_embedding=True,
      relative_attention_num_buckets=32, relative_attention_max_distance=128,
      layer_norm_epsilon=1e-6)


def test_flan_t5_config():
  config = hf.hf_config_to_t5_config(_FLAN_T5_BASE)
  assert config.mlp_activations == GATED_GELU
  assert not config.logits_via_embedding
  assert (config.emb_dim, config.num_heads, config.num_decoder_layers) == (
      768, 12, 12)


@pytest.mark.parametrize("proj, activations", [
    ("gated-gelu", ("gelu", "linear")),
    ("gated-gelu_new", ("gelu", "linear")),
    ("gelu", ("gelu_exact",)),
    ("gated-silu", ("silu", "linear")),
    ("relu", ("relu",)),
])
def test_feed_forward_proj(proj, activations):
  config = hf.hf_config_to_t5_config({"feed_forward_proj": proj})
  assert config.mlp_activations == activations


@pytest.mark.parametrize("updates, match", [
    ({"feed_forward_proj": "gated-tanh"}, "Unsupported MLP activation 'tanh'"),
    ({"feed_forward_proj": "relu-gated"}, "Unsupported feed_forward_proj"),
    ({"feed_forward_proj": "gated-gelu-new"}, "Unsupported feed_forward_proj"),
    ({"model_type": "bart"}, "model_type 'bart'"),
    ({"is_encoder_decoder": False}, "is_encoder_decoder"),
])
def test_unsupported_config_is_a_clear_error(updates, match):
  with pytest.raises(ValueError, match=match):
    hf.hf_config_to_t5_config({**_FLAN_T5_BASE, **updates})


def test_missing_directory_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sharded.open_checkpoint(tmp_path / "nope")


def test_bad_pytorch_checkpoint_is_a_clear_error(tmp_path):
  model_dir = tmp_path / "torch_only"
  model_dir.mkdir()
  shutil.copy(T5_1_0 / "config.json", model_dir)
  (model_dir / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(ValueError, match="not a PyTorch zip checkpoint"):
    checkpoints.read_params(model_dir)


def test_dispatcher_detects_hugging_face():
  assert (checkpoints.detect_checkpoint_format(T5_1_1) ==
          checkpoints.CheckpointFormat.HUGGING_FACE)
  params = checkpoints.read_params(T5_1_1)
  np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                _tensors(T5_1_1)["lm_head.weight"].T)


def test_dispatcher_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoints.read_params(tmp_path / "nope")
  (tmp_path / "notes.txt").write_text("hi")
  with pytest.raises(ValueError, match=r"Unknown checkpoint layout.*notes"):
    checkpoints.read_params(tmp_path)
  with pytest.raises(ValueError, match="is a file"):
    checkpoints.read_params(tmp_path / "notes.txt")


def test_reference_outputs_are_complete():
  for model_dir in (T5_1_0, T5_1_1):
    ref = np.load(model_dir / "reference.npz")
    assert ref["encoder_input_tokens"].shape == (4, 24)
    assert ref["encoder_outputs"].shape == (4, 24, 32)
    assert ref["decoder_input_tokens"].shape == (4, 8)
    assert ref["decoder_target_tokens"].shape == (4, 8)
    assert ref["logits"].shape == (4, 8, 128)
    assert ref["greedy_tokens"].shape == (4, 10)
    assert (ref["encoder_input_tokens"] == 0).any()  # Some padding.
    np.testing.assert_array_equal(ref["decoder_input_tokens"][:, 1:],
                                  ref["decoder_target_tokens"][:, :-1])
