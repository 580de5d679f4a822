"""Tests for opening a checkpoint once and reading parameters sharded, and
for its host mode (every parameter whole, as numpy).

The sharded reads are checked against the host reads of the same record;
the host reads against the checkpoints' own files in test_checkpoints_t5x.py
and test_checkpoints_hf.py.

T5X: the real T5X-written checkpoint in the shared folder (see
shared/fixtures/PROVENANCE.md; T5 1.1, EMBED 4, MLP 8, 2 heads of 2, 2 + 2
layers, vocabulary 32128, step 3). Hugging Face: the tiny transformers-written
directories in testdata/, random tensors of the same names and shapes, and a
sharded-index copy. conftest.py gives 8 CPU devices: the mesh is
(data 2, model 4).
"""

import json
import pathlib
import shutil

from helpers import T5X_TINY_CONFIG, TESTDATA, shared_path
from flax import serialization
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_dtypes
import numpy as np
import pytest
from safetensors import numpy as st_numpy

from prompt_tuning import checkpoints
from prompt_tuning import partitioning
from prompt_tuning.checkpoints import hf
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import validation
from prompt_tuning.models.config import T5Config

T5X_CONFIG = T5X_TINY_CONFIG
T5_1_0 = TESTDATA / "hf_t5_1_0_tiny"
T5_1_1 = TESTDATA / "hf_t5_1_1_tiny"
EMBEDDING = "token_embedder/embedding"
QUERY = "encoder/layers_0/attention/query/kernel"


def _t5x_dir() -> pathlib.Path:
  return shared_path("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")


def _mesh():
  return partitioning.create_mesh(num_partitions=4)


def _spec(name: str, shape: tuple[int, ...]) -> P:
  """Embedding over both axes, other matrices' columns over `model`, the
  rest (layer-norm scales) replicated."""
  if name == EMBEDDING:
    return P("data", "model")
  if len(shape) == 2 and shape[1] % 4 == 0:
    return P(None, "model")
  return P()


def _shardings(record: sharded.CheckpointRecord, mesh) -> dict:
  return {name: NamedSharding(mesh, _spec(name, s.shape))
          for name, s in record.flat_shapes.items()}


@pytest.fixture
def reads(monkeypatch) -> list[tuple[str, str, tuple[int, ...]]]:
  """(name, kind, slice shape) of every `_read_slice` call."""
  calls = []
  real = sharded._read_slice  # pylint: disable=protected-access

  def counting(source, handle, index):
    array = real(source, handle, index)
    calls.append((source.name, source.kind, tuple(array.shape)))
    return array

  monkeypatch.setattr(sharded, "_read_slice", counting)
  return calls


def _assert_same(params, want) -> None:
  flat, want = (param_tree.flatten_params(params),
                param_tree.flatten_params(want))
  assert sorted(flat) == sorted(want)
  for name, array in want.items():
    assert isinstance(flat[name], jax.Array), name
    assert flat[name].dtype == np.float32, name
    np.testing.assert_array_equal(np.asarray(flat[name]), array, err_msg=name)


# --------------------------------------------------------------------------
# T5X.
# --------------------------------------------------------------------------


def test_t5x_open_reads_no_array_data(reads):
  record = sharded.open_checkpoint(_t5x_dir().parent)  # Model dir: latest.
  assert record.format == checkpoints.CheckpointFormat.T5X
  assert record.path == _t5x_dir()
  assert (record.step, record.version) == (3, 3)
  assert record.config is None
  spec = param_tree.flatten_params(checkpoints.t5_param_shapes(T5X_CONFIG))
  assert sorted(record.names) == sorted(spec)
  for name, shape in record.flat_shapes.items():
    assert shape.shape == spec[name].shape and shape.dtype == np.float32
  kinds = {s.kind for s in record.sources.values()}
  assert kinds == {"inline", "tensorstore"}
  assert record.sources[EMBEDDING].kind == "tensorstore"
  assert record.sources["encoder/encoder_norm/scale"].kind == "inline"
  assert not reads and not record.read_counts


def test_t5x_sharded_read_equals_host_read(reads):
  mesh = _mesh()
  record = sharded.open_checkpoint(_t5x_dir())
  shardings = _shardings(record, mesh)
  params = record.read_all(shardings)
  _assert_same(params, sharded.read_params(_t5x_dir()))
  flat = param_tree.flatten_params(params)
  for name, array in flat.items():
    assert array.sharding == shardings[name], name
  query = flat[QUERY]  # [4, 4] split 4 ways over `model`.
  assert query.sharding.spec == P(None, "model")
  assert len(query.addressable_shards) == 8
  for shard in query.addressable_shards:
    assert shard.data.shape == (4, 1)
    assert shard.data.nbytes == query.nbytes // 4
  embedding = flat[EMBEDDING]  # [32128, 4] over data x model.
  for shard in embedding.addressable_shards:
    assert shard.data.nbytes == embedding.nbytes // 8


def test_host_read_is_one_whole_read_per_array(reads):
  record = sharded.open_checkpoint(_t5x_dir())
  params = param_tree.flatten_params(record.read_all())
  assert sorted(params) == sorted(record.names)
  for name, array in params.items():
    assert isinstance(array, np.ndarray) and array.flags.c_contiguous, name
    assert array.dtype == np.float32, name
    assert array.shape == record.sources[name].shape, name
  assert sorted(name for name, _, _ in reads) == sorted(record.names)
  assert all(shape == record.sources[name].shape for name, _, shape in reads)
  kept = record.read(QUERY, dtype=None)  # One parameter, stored dtype.
  assert kept.dtype == record.sources[QUERY].dtype
  np.testing.assert_array_equal(kept, params[QUERY])
  mixed = param_tree.flatten_params(record.read_all(
      {QUERY: None, EMBEDDING: partitioning.replicated(_mesh())}))
  assert isinstance(mixed[QUERY], np.ndarray)
  assert isinstance(mixed[EMBEDDING], jax.Array)


def test_read_params_checks_first_and_keeps_the_expected_order(reads):
  expected = checkpoints.t5_param_shapes(T5X_CONFIG)
  params = sharded.read_params(_t5x_dir().parent, expected)
  assert list(param_tree.flatten_params(params)) == list(
      param_tree.flatten_params(expected))
  reads.clear()
  wrong = T5Config(**{**T5X_CONFIG.__dict__, "num_decoder_layers": 3})
  with pytest.raises(checkpoints.ParamMismatchError, match="decoder/layers_2"):
    sharded.read_params(_t5x_dir(), checkpoints.t5_param_shapes(wrong))
  assert not reads


def test_t5x_one_read_per_array_when_replicated(reads):
  record = sharded.open_checkpoint(_t5x_dir())
  one_device = partitioning.create_mesh(mesh_shape=(1, 1),
                                        devices=jax.devices()[:1])
  record.read_all(NamedSharding(one_device, P()))
  assert sorted(name for name, _, _ in reads) == sorted(record.names)
  # Replicated over all 8 devices: still one host read per array.
  reads.clear()
  record.read_all(partitioning.replicated(_mesh()))
  assert sorted(name for name, _, _ in reads) == sorted(record.names)
  assert all(shape == record.sources[name].shape
             for name, _, shape in reads)


def test_t5x_one_read_per_distinct_slice(reads):
  record = sharded.open_checkpoint(_t5x_dir())
  params = param_tree.flatten_params(record.read_all(_shardings(record,
                                                                _mesh())))
  by_name: dict[str, list[tuple[int, ...]]] = {}
  for name, _, shape in reads:
    by_name.setdefault(name, []).append(shape)
  assert sorted(by_name) == sorted(record.names)
  for name, source in record.sources.items():
    rows, *rest = source.shape
    spec = _spec(name, source.shape)
    if spec == P("data", "model"):
      assert by_name[name] == [(rows // 2, rest[0] // 4)] * 8, name
    elif spec == P(None, "model"):
      assert by_name[name] == [(rows, rest[0] // 4)] * 4, name
    else:
      assert by_name[name] == [source.shape], name
    assert record.read_counts[name] == len(by_name[name])
    assert params[name].shape == source.shape
  zarr = [n for n, s in record.sources.items() if s.kind == "tensorstore"]
  assert len(zarr) == 38
  assert all(record.read_counts[n] in (4, 8) for n in zarr)


def test_t5x_step_comes_from_the_single_msgpack_read(monkeypatch):
  restores = []
  real = serialization.msgpack_restore

  def counting(data):
    restores.append(len(data))
    return real(data)

  monkeypatch.setattr(serialization, "msgpack_restore", counting)
  record = sharded.open_checkpoint(_t5x_dir())
  record.read_all(_shardings(record, _mesh()))
  assert record.step == 3
  assert len(restores) == 1


def test_shapes_are_checked_before_any_read(reads):
  record = sharded.open_checkpoint(_t5x_dir())
  record.check(checkpoints.t5_param_shapes(T5X_CONFIG))
  checked = validation.check_params(
      checkpoints.t5_param_shapes(T5X_CONFIG), record.shapes,
      source=record.description)
  assert isinstance(checked["encoder"]["encoder_norm"]["scale"],
                    jax.ShapeDtypeStruct)
  wrong = T5Config(**{**T5X_CONFIG.__dict__, "mlp_dim": 16})
  with pytest.raises(checkpoints.ParamMismatchError,
                     match=r"mlp/wo/kernel: checkpoint \[8, 4\], expected "
                     r"\[16, 4\]") as error:
    record.check(checkpoints.t5_param_shapes(wrong))
  assert str(_t5x_dir()) in str(error.value)
  assert not reads


def test_read_dtype_and_single_parameters():
  record = sharded.open_checkpoint(_t5x_dir())
  mesh = _mesh()
  want = param_tree.flatten_params(sharded.read_params(_t5x_dir()))
  sharding = NamedSharding(mesh, P(None, "model"))
  bf16 = record.read(QUERY, sharding, dtype=jnp.bfloat16)
  assert bf16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(bf16),
                                want[QUERY].astype(ml_dtypes.bfloat16))
  kept = record.read("encoder/encoder_norm/scale",
                     NamedSharding(mesh, P("model")), dtype=None)
  assert kept.dtype == np.float32
  np.testing.assert_array_equal(np.asarray(kept),
                                want["encoder/encoder_norm/scale"])
  partial = record.read_all({QUERY: sharding})
  assert param_tree.flatten_params(partial).keys() == {QUERY}
  with pytest.raises(KeyError, match="encoder/nope"):
    record.read_all({"encoder": {"nope": sharding}})
  with pytest.raises(KeyError, match="no parameter 'nope'"):
    record.read("nope", sharding)


def test_t5x_missing_array_folder_is_a_clear_error(tmp_path):
  copy = tmp_path / "checkpoint_3"
  shutil.copytree(_t5x_dir(), copy)
  shutil.rmtree(copy / "target.encoder.layers_0.mlp.wo.kernel")
  with pytest.raises(FileNotFoundError,
                     match=r"encoder/layers_0/mlp/wo/kernel.*not a local"):
    sharded.open_checkpoint(copy)


# --------------------------------------------------------------------------
# Hugging Face.
# --------------------------------------------------------------------------


def _tensors(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
  return st_numpy.load_file(model_dir / "model.safetensors")


def _write_hf(dest: pathlib.Path, like: pathlib.Path,
              tensors: dict[str, np.ndarray], shards: int = 1,
              config_updates: dict | None = None) -> pathlib.Path:
  """A Hugging Face directory with `like`'s config.json and `tensors`, as
  model.safetensors or (`shards` > 1) an index and its shard files."""
  dest.mkdir()
  config = json.loads((like / "config.json").read_text())
  config.update(config_updates or {})
  (dest / "config.json").write_text(json.dumps(config))
  if shards == 1:
    st_numpy.save_file(tensors, dest / "model.safetensors")
    return dest
  names = sorted(tensors)
  weight_map = {}
  for i in range(shards):
    shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
    st_numpy.save_file({n: tensors[n] for n in names[i::shards]},
                       dest / shard)
    weight_map.update({n: shard for n in names[i::shards]})
  (dest / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
       "weight_map": weight_map}))
  return dest


def _random_like(model_dir: pathlib.Path, seed: int = 0
                 ) -> dict[str, np.ndarray]:
  """Random tensors with the names and shapes of a tiny model's."""
  rng = np.random.default_rng(seed)
  return {n: rng.standard_normal(a.shape).astype(np.float32)
          for n, a in _tensors(model_dir).items()}


def _read_hf_sharded(model_dir: pathlib.Path, **kwargs):
  record = sharded.open_checkpoint(model_dir, **kwargs)
  return record, record.read_all(_shardings(record, _mesh()))


@pytest.mark.parametrize("model_dir", [T5_1_0, T5_1_1], ids=lambda p: p.name)
def test_hf_sharded_read_equals_host_read(model_dir, reads):
  record, params = _read_hf_sharded(model_dir)
  assert record.format == checkpoints.CheckpointFormat.HUGGING_FACE
  assert record.config == hf.hf_config_to_t5_config(
      hf.read_hf_config(model_dir)) and record.step is None
  assert record.path == model_dir.resolve()
  reads_before = len(reads)
  _assert_same(params, sharded.read_params(model_dir))
  del reads[reads_before:]
  query = param_tree.flatten_params(params)[QUERY]  # [32, 16], transposed.
  for shard in query.addressable_shards:
    assert shard.data.shape == (32, 4)
    assert shard.data.nbytes == query.nbytes // 4
  # Transposed kernels: one read per distinct quarter.
  assert [s for n, _, s in reads if n == QUERY] == [(32, 4)] * 4


@pytest.mark.parametrize("shards", [1, 3])
def test_hf_random_model_single_file_and_index(tmp_path, shards):
  model_dir = _write_hf(tmp_path / f"random_{shards}", T5_1_1,
                        _random_like(T5_1_1), shards=shards)
  record, params = _read_hf_sharded(model_dir)
  _assert_same(params, sharded.read_params(model_dir))
  assert len({s.file for s in record.sources.values()}) == shards
  record.close()


def test_hf_bfloat16_is_cast(tmp_path):
  tensors = {n: a.astype(ml_dtypes.bfloat16)
             for n, a in _random_like(T5_1_1, seed=1).items()}
  model_dir = _write_hf(tmp_path / "bf16", T5_1_1, tensors)
  record, params = _read_hf_sharded(model_dir)
  assert record.sources[QUERY].dtype == ml_dtypes.bfloat16
  _assert_same(params, sharded.read_params(model_dir))
  np.testing.assert_array_equal(
      np.asarray(param_tree.flatten_params(params)[QUERY]),
      tensors["encoder.block.0.layer.0.SelfAttention.q.weight"]
      .astype(np.float32).T)


def test_hf_head_tied_to_embedding(tmp_path):
  tensors = _random_like(T5_1_1, seed=2)
  del tensors["lm_head.weight"]
  model_dir = _write_hf(tmp_path / "v5", T5_1_1, tensors, config_updates={
      "scale_decoder_outputs": False, "tie_word_embeddings": True})
  record, params = _read_hf_sharded(model_dir)
  assert record.sources["decoder/logits_dense/kernel"].key == "shared.weight"
  _assert_same(params, sharded.read_params(model_dir))


def test_hf_equal_embedding_copies_are_compared(tmp_path, reads):
  tensors = _tensors(T5_1_0)
  tensors["encoder.embed_tokens.weight"] = tensors["shared.weight"].copy()
  tensors["lm_head.weight"] = tensors["shared.weight"].copy()
  model_dir = _write_hf(tmp_path / "copies", T5_1_0, tensors)
  record, params = _read_hf_sharded(model_dir)
  assert record.read_counts["encoder.embed_tokens.weight"] == 1
  assert record.read_counts["lm_head.weight"] == 1
  assert record.read_counts["shared.weight"] == 2
  assert "logits_dense" not in params["decoder"]
  _assert_same(params, sharded.read_params(model_dir))


@pytest.mark.parametrize("name, match", [
    ("decoder.embed_tokens.weight", "decoder.embed_tokens.weight differs"),
    ("lm_head.weight", "lm_head.weight differs"),
])
def test_hf_differing_copies_are_rejected(tmp_path, name, match):
  tensors = _tensors(T5_1_0)
  tensors[name] = tensors["shared.weight"] * 2
  model_dir = _write_hf(tmp_path / "odd", T5_1_0, tensors)
  with pytest.raises(ValueError, match=match):
    sharded.open_checkpoint(model_dir)
  record = sharded.open_checkpoint(model_dir, check_copies=False)
  assert record.sources[EMBEDDING].key == "shared.weight"


def test_hf_mismatches_name_both_names(tmp_path):
  tensors = _tensors(T5_1_0)
  del tensors["encoder.block.1.layer.0.SelfAttention.k.weight"]
  tensors["encoder.block.0.layer.0.SelfAttention.q.bias"] = np.zeros(
      16, np.float32)
  model_dir = _write_hf(tmp_path / "broken", T5_1_0, tensors)
  with pytest.raises(checkpoints.ParamMismatchError) as error:
    sharded.open_checkpoint(model_dir)
  message = str(error.value)
  assert "1 missing" in message and "1 in the checkpoint but not" in message
  assert ("encoder/layers_1/attention/key/kernel (HF encoder.block.1.layer.0"
          ".SelfAttention.k.weight)" in message)
  assert "encoder.block.0.layer.0.SelfAttention.q.bias: [16]" in message


def test_hf_missing_files_are_clear_errors(tmp_path):
  model_dir = _write_hf(tmp_path / "sharded", T5_1_1, _tensors(T5_1_1),
                        shards=2)
  (model_dir / "model-00002-of-00002.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="model-00002-of-00002"):
    sharded.open_checkpoint(model_dir)
  torch_only = tmp_path / "torch_only"
  torch_only.mkdir()
  shutil.copy(T5_1_0 / "config.json", torch_only)
  (torch_only / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(ValueError, match="not a PyTorch zip checkpoint"):
    sharded.open_checkpoint(torch_only)


def test_missing_path_and_unknown_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sharded.open_checkpoint(tmp_path / "nope")
  (tmp_path / "notes.txt").write_text("hi")
  with pytest.raises(ValueError, match=r"Unknown checkpoint layout.*notes"):
    sharded.open_checkpoint(tmp_path)
  with pytest.raises(ValueError, match="is a file"):
    sharded.open_checkpoint(tmp_path / "notes.txt")
  (tmp_path / "checkpoint").write_bytes(serialization.msgpack_serialize(
      {"params": {"x": np.zeros(2, np.float32)}}))
  with pytest.raises(ValueError, match="is not a T5X checkpoint"):
    sharded.open_checkpoint(tmp_path)


# --------------------------------------------------------------------------
# benchmarks/restore_state.py's writer.
# --------------------------------------------------------------------------


def _restore_state():
  import importlib.util  # pylint: disable=g-import-not-at-top
  from helpers import REPO_ROOT  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "restore_state", REPO_ROOT / "benchmarks" / "restore_state.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_benchmark_writer_t5x_layout_and_chunks(tmp_path):
  bench = _restore_state()
  # T5X chunking: at most 64 MiB, dividing the shape, largest dim first.
  assert bench.t5x_chunk_shape([32128, 768], 4) == [16064, 768]
  assert bench.t5x_chunk_shape([768, 32128], 4) == [768, 16064]
  assert bench.t5x_chunk_shape([768, 2048], 4) == [768, 2048]
  base = bench.t5_1_1_config("t5_1_1_base")
  assert (base.emb_dim, base.num_heads, base.mlp_dim,
          base.num_encoder_layers) == (768, 12, 2048, 12)
  with pytest.raises(ValueError, match="Unknown T5 1.1 size"):
    bench.t5_1_1_config("t5_1_0_base")

  path = bench.write_random_t5x_checkpoint(tmp_path, "t5_1_1_tiny", seed=3)
  assert path == tmp_path / "checkpoint_0"
  config = bench.t5_1_1_config("t5_1_1_tiny")
  record = sharded.open_checkpoint(tmp_path)
  assert record.step == 0 and record.version == 3
  record.check(checkpoints.t5_param_shapes(config))
  metadata = json.loads((path / "target.token_embedder.embedding" /
                         ".zarray").read_text())
  assert metadata["chunks"] == [32128, 4]
  _assert_same(record.read_all(_shardings(record, _mesh())),
               record.read_all())
