"""Every Hugging Face T5 weights format loads exactly as its safetensors.

The fixtures in testdata/hf_formats/ are written by transformers 4.57, torch,
flax and tensorflow themselves (scripts/make_hf_format_fixtures.py, whose
docstring has the environments); nothing here imports torch, tensorflow or
transformers.
"""

import collections
import io
import json
import pathlib
import pickle
import shutil
import zipfile

from helpers import TESTDATA
import jax
import ml_dtypes
import numpy as np
import pytest
from flax import serialization

from prompt_tuning.checkpoints import hf_formats
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import torch_zip
from prompt_tuning.training import preflight

FORMATS = TESTDATA / "hf_formats"
T5_1_0 = FORMATS / "t5_1_0"
T5_1_1 = FORMATS / "t5_1_1"
MARKER = "pwned_by_checkpoint"  # What the malicious pickle would create.


def _only(model_dir: pathlib.Path, dest: pathlib.Path,
          *patterns: str) -> pathlib.Path:
  """A copy of `model_dir` holding config.json and the files matching."""
  dest.mkdir()
  shutil.copy(model_dir / "config.json", dest)
  for pattern in patterns:
    for f in model_dir.glob(pattern):
      shutil.copy(f, dest / f.name)
  return dest


def _flat(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
  return param_tree.flatten_params(sharded.read_params(model_dir, dtype=None))


def _reference(model_dir: pathlib.Path, tmp_path: pathlib.Path
               ) -> dict[str, np.ndarray]:
  """What the model's own model.safetensors loads to."""
  return _flat(_only(model_dir, tmp_path / "reference", "model.safetensors"))


def _assert_same(got: dict[str, np.ndarray],
                 want: dict[str, np.ndarray]) -> None:
  assert sorted(got) == sorted(want)
  for name, array in want.items():
    assert got[name].dtype == array.dtype, name
    assert got[name].shape == array.shape, name
    np.testing.assert_array_equal(got[name], array, err_msg=name)


CASES = [
    (T5_1_0, ("pytorch_model.bin",), hf_formats.PYTORCH),
    (T5_1_1, ("pytorch_model.bin",), hf_formats.PYTORCH),
    (T5_1_1, ("pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"),
     hf_formats.PYTORCH),
    (T5_1_0, ("flax_model.msgpack",), hf_formats.FLAX),
    (T5_1_1, ("flax_model.msgpack",), hf_formats.FLAX),
    (T5_1_1, ("tf_model.h5",), hf_formats.TF),
]


@pytest.mark.parametrize("model_dir,patterns,fmt", CASES,
                         ids=lambda c: c.name if isinstance(c, pathlib.Path)
                         else "+".join(c) if isinstance(c, tuple) else c)
def test_format_loads_as_its_safetensors(tmp_path, model_dir, patterns, fmt):
  only = _only(model_dir, tmp_path / "only", *patterns)
  with sharded.open_checkpoint(only) as record:
    assert record.weights.format == fmt
    assert record.weights.read_from == (
        "pytorch_model.bin.index.json" if len(patterns) > 1 else patterns[0])
    assert {s.kind for s in record.sources.values()} == {fmt}
    assert record.weights.others == ()
  _assert_same(_flat(only), _reference(model_dir, tmp_path))


def test_sharded_flax_msgpack(tmp_path):
  """Shards as transformers 4.57 writes them: nested trees, and an index
  whose weight map names '/'-joined Flax paths."""
  only = _only(T5_1_1, tmp_path / "only")
  tree = serialization.msgpack_restore(
      (T5_1_1 / "flax_model.msgpack").read_bytes())
  flat = param_tree.flatten_params(tree)
  shards = {"flax_model-00001-of-00002.msgpack": {},
            "flax_model-00002-of-00002.msgpack": {}}
  weight_map = {}
  for i, (name, array) in enumerate(flat.items()):
    shard = list(shards)[i % 2]
    shards[shard][name] = array
    weight_map[name] = shard
  for shard, arrays in shards.items():
    (only / shard).write_bytes(serialization.msgpack_serialize(
        param_tree.unflatten_params(arrays)))
  (only / "flax_model.msgpack.index.json").write_text(
      json.dumps({"metadata": {}, "weight_map": weight_map}))
  with sharded.open_checkpoint(only) as record:
    assert record.weights.read_from == "flax_model.msgpack.index.json"
  _assert_same(_flat(only), _reference(T5_1_1, tmp_path))


def test_pytorch_bin_reads_tied_copies_from_one_storage(tmp_path):
  only = _only(T5_1_1, tmp_path / "only", "pytorch_model.bin")
  with torch_zip.TorchZipFile(only / "pytorch_model.bin") as f:
    assert "encoder.embed_tokens.weight" in f.keys()
    assert (f.storage_key("shared.weight") ==
            f.storage_key("encoder.embed_tokens.weight") ==
            f.storage_key("decoder.embed_tokens.weight"))
    assert f.storage_key("lm_head.weight") != f.storage_key("shared.weight")
    # Views of one memory-mapped storage, not copies.
    assert np.shares_memory(f.get_slice("shared.weight")[:],
                            f.get_slice("decoder.embed_tokens.weight")[:])
  with sharded.open_checkpoint(only) as record:  # The copies are compared.
    assert record.read_counts["encoder.embed_tokens.weight"] == 1


def test_pytorch_bin_views_offsets_and_strides(tmp_path):
  """One storage, every tensor at its own offset, 2-D ones transposed."""
  views = FORMATS / "t5_1_1_views"
  with torch_zip.TorchZipFile(views / "pytorch_model.bin") as f:
    assert len({f.storage_key(n) for n in f.keys()}) == 1
  _assert_same(_flat(views), _reference(T5_1_1, tmp_path))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16],
                         ids=["float16", "bfloat16"])
def test_pytorch_bin_half_precision(tmp_path, dtype):
  model_dir = FORMATS / f"t5_1_1_{np.dtype(dtype).name}"
  want = {n: a.astype(dtype)
          for n, a in _reference(T5_1_1, tmp_path).items()}
  _assert_same(_flat(model_dir), want)
  as_float32 = param_tree.flatten_params(sharded.read_params(model_dir))
  assert {a.dtype for a in as_float32.values()} == {np.dtype(np.float32)}


def test_pytorch_bin_reads_into_a_sharding(tmp_path):
  only = _only(T5_1_1, tmp_path / "only", "pytorch_model.bin")
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  name = "decoder/layers_1/mlp/wi_0/kernel"
  with sharded.open_checkpoint(only) as record:
    array = record.read(name, sharding)
  np.testing.assert_array_equal(np.asarray(array),
                                _reference(T5_1_1, tmp_path)[name])


def test_malicious_pickle_is_refused_unrun(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = FORMATS / "malicious" / "pytorch_model.bin"
  with pytest.raises(torch_zip.UnsafeCheckpointError) as e:
    sharded.open_checkpoint(path.parent)
  assert str(path) in str(e.value)
  assert "posix.system" in str(e.value)
  assert not (tmp_path / MARKER).exists()


def _torch_like_zip(path: pathlib.Path, obj: object) -> None:
  """A zip laid out as torch.save's, with `obj` pickled as data.pkl."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
    z.writestr("archive/byteorder", "little")


@pytest.mark.parametrize("obj,named", [
    ({"shared.weight": collections.Counter(a=1)}, "collections.Counter"),
    ({"x": print}, "__builtin__.print"),
    ({"x": io.BytesIO}, "_io.BytesIO"),
])
def test_non_tensor_objects_are_refused(tmp_path, obj, named):
  path = tmp_path / "pytorch_model.bin"
  _torch_like_zip(path, obj)
  with pytest.raises(torch_zip.UnsafeCheckpointError,
                     match=f"{path}.*{named}.*not a tensor record"):
    torch_zip.TorchZipFile(path)


def test_setting_state_is_refused_but_on_dicts(tmp_path):
  """BUILD on one of the reader's own functions would alter it."""
  path = tmp_path / "pytorch_model.bin"
  # GLOBAL torch._utils._rebuild_tensor_v2; {'x': 1}; BUILD; STOP.
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl",
               b"ctorch._utils\n_rebuild_tensor_v2\n}S'x'\nK\x01sb.")
  with pytest.raises(torch_zip.UnsafeCheckpointError,
                     match="sets the state of.*only dicts"):
    torch_zip.TorchZipFile(path)
  assert not hasattr(torch_zip._rebuild_tensor_v2, "x")  # pylint: disable=protected-access
  # A state dict with attributes (`_metadata`) is fine.
  state = collections.OrderedDict()
  state._metadata = {"": {"version": 1}}  # pylint: disable=protected-access
  _torch_like_zip(path, state)
  assert torch_zip.TorchZipFile(path).keys() == []


def test_a_state_dict_of_non_tensors_is_refused(tmp_path):
  path = tmp_path / "pytorch_model.bin"
  _torch_like_zip(path, {"shared.weight": [1.0, 2.0]})
  with pytest.raises(ValueError, match="dict of named tensors"):
    torch_zip.TorchZipFile(path)


def test_a_broken_pickle_is_a_clear_error(tmp_path):
  path = tmp_path / "pytorch_model.bin"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"a": 1})[:-3])
  with pytest.raises(ValueError, match="not a readable pickle"):
    torch_zip.TorchZipFile(path)


@pytest.mark.parametrize("name, match", [
    ("pytorch_model.bin", "not a PyTorch zip checkpoint"),
    ("tf_model.h5", "not an h5 file"),
])
def test_a_file_of_another_format_is_a_clear_error(tmp_path, name, match):
  only = _only(T5_1_0, tmp_path / "only")
  (only / name).write_bytes(b"not read")
  with pytest.raises(ValueError, match=match):
    sharded.open_checkpoint(only)


def test_several_formats_read_safetensors_and_say_so(tmp_path):
  with sharded.open_checkpoint(T5_1_1) as record:
    weights = record.weights
    assert weights.format == hf_formats.SAFETENSORS
    assert weights.read_from == "model.safetensors"
    assert "pytorch_model.bin" in weights.others
    assert "flax_model.msgpack" in weights.others
    assert "tf_model.h5" in weights.others
  note = preflight._check_checkpoint_path(  # pylint: disable=protected-access
      str(T5_1_1), "zero")
  assert "reading model.safetensors" in note and "not read" in note
  # Without safetensors the sharded .bin comes first, then the single one.
  no_st = _only(T5_1_1, tmp_path / "no_st", "pytorch_model*",
                "flax_model.msgpack")
  with sharded.open_checkpoint(no_st) as record:
    assert record.weights.read_from == "pytorch_model.bin.index.json"
    assert record.weights.format == hf_formats.PYTORCH
  _assert_same(_flat(no_st), _reference(T5_1_1, tmp_path))


def test_no_readable_weights_names_what_is_there(tmp_path):
  only = _only(T5_1_0, tmp_path / "only")
  with pytest.raises(FileNotFoundError, match="No weights file"):
    sharded.open_checkpoint(only)
  (only / "tf_model.h5.index.json").write_text("{}")
  with pytest.raises(FileNotFoundError,
                     match="tf_model.h5.index.json.*cannot be read"):
    sharded.open_checkpoint(only)


def test_tf_names_map_to_pytorch_names():
  assert hf_formats.tf_name_to_hf_name(
      "tft5_for_conditional_generation/decoder/block_._1/layer_._2/"
      "DenseReluDense/wi_0/kernel:0") == (
          "decoder.block.1.layer.2.DenseReluDense.wi_0.weight", True)
  assert hf_formats.tf_name_to_hf_name("shared/shared/embeddings:0") == (
      "shared.weight", False)
