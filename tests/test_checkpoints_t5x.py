"""Tests for reading T5X native checkpoints to the host (`sharded`).

Uses the real T5X-written checkpoint in the shared folder (see
shared/fixtures/PROVENANCE.md): T5 1.1, EMBED 4, 2 heads of 2, MLP 8, 2
encoder and 2 decoder layers, 4 relative buckets, vocabulary 32128, saved at
step 3 with Adafactor (whose slots the reader leaves unread).
"""

import dataclasses

from helpers import T5X_TINY_CONFIG, shared_path
from flax import serialization
import numpy as np
import pytest

from prompt_tuning import checkpoints
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import t5x
from prompt_tuning.models.config import RELU

CONFIG = T5X_TINY_CONFIG


def _model_dir():
  return shared_path("fixtures", "t5x_t5_1_1_tiny")


def _checkpoint_dir():
  return shared_path("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")


@pytest.fixture(scope="module")
def params():
  return sharded.read_params(_checkpoint_dir(),
                             checkpoints.t5_param_shapes(CONFIG))


def test_params_match_tree_spec(params):
  spec = checkpoints.flatten_params(checkpoints.t5_param_shapes(CONFIG))
  flat = checkpoints.flatten_params(params)
  assert sorted(flat) == sorted(spec)
  for name, array in flat.items():
    assert isinstance(array, np.ndarray), name
    assert array.dtype == np.float32, name
    assert array.shape == spec[name].shape, name
    assert np.isfinite(array).all(), name


def test_zarr_and_inline_arrays_are_read(params):
  # Stored as zarr folders beside the msgpack file.
  embedding = params["token_embedder"]["embedding"]
  assert embedding.shape == (32128, 4)
  assert np.abs(embedding).sum() > 0
  kernel = params["encoder"]["layers_0"]["attention"]["key"]["kernel"]
  assert len(np.unique(kernel)) == kernel.size  # Not a fill value.
  # Stored inline in the msgpack file; layer-norm scales start at 1.
  scale = params["encoder"]["encoder_norm"]["scale"]
  assert np.all(np.abs(scale - 1.0) < 0.5)
  assert params["decoder"]["relpos_bias"]["rel_embedding"].shape == (2, 4)


def test_step_version_and_path():
  with sharded.open_checkpoint(_checkpoint_dir()) as record:
    assert record.step == 3
    assert record.version == 3
    assert record.path == _checkpoint_dir()
  # Only the target is read: no Adafactor slot is among the parameters.
  assert not any(name.endswith(("/v", "/m", "/v_row", "/v_col"))
                 for name in record.names)


def test_model_dir_and_checkpoint_file_resolve():
  assert t5x.find_checkpoint_dir(_model_dir()) == _checkpoint_dir()
  assert (t5x.find_checkpoint_dir(_checkpoint_dir() / "checkpoint") ==
          _checkpoint_dir())


def test_model_dir_picks_the_latest_step(tmp_path):
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  for step in (2, 10, 9):
    (model_dir / f"checkpoint_{step}").symlink_to(_checkpoint_dir())
  # Ignored: T5X's temporary write folders and folders without a checkpoint.
  (model_dir / "checkpoint_20.tmp-1700000000").symlink_to(_checkpoint_dir())
  (model_dir / "checkpoint_30").mkdir()
  record = sharded.open_checkpoint(model_dir)
  assert record.path == model_dir / "checkpoint_10"
  assert record.step == 3  # The step recorded inside the checkpoint.
  assert sorted(t5x.checkpoint_steps(model_dir)) == [2, 9, 10]


def test_dispatcher_detects_t5x(params):
  for path in (_checkpoint_dir(), _model_dir(),
               _checkpoint_dir() / "checkpoint"):
    assert (checkpoints.detect_checkpoint_format(path) ==
            checkpoints.CheckpointFormat.T5X)
  flat = checkpoints.flatten_params(checkpoints.read_params(_model_dir()))
  want = checkpoints.flatten_params(params)
  assert sorted(flat) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(flat[name], want[name])


def test_missing_path_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sharded.open_checkpoint(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="No T5X checkpoint"):
    t5x.find_checkpoint_dir(tmp_path)
  (tmp_path / "checkpoint_5").mkdir()
  with pytest.raises(FileNotFoundError, match="checkpoint_5 dirs have no"):
    t5x.find_checkpoint_dir(tmp_path)


def test_missing_array_folder_is_a_clear_error(tmp_path):
  broken = tmp_path / "checkpoint_3"
  broken.mkdir()
  for child in _checkpoint_dir().iterdir():
    if child.name != "target.decoder.logits_dense.kernel":
      (broken / child.name).symlink_to(child)
  with pytest.raises(FileNotFoundError,
                     match=r"decoder/logits_dense/kernel.*not a local folder"):
    sharded.open_checkpoint(broken)


def test_wrong_model_config_lists_every_difference():
  t5_1_0 = dataclasses.replace(CONFIG, mlp_activations=RELU,
                               logits_via_embedding=True)
  with pytest.raises(checkpoints.ParamMismatchError) as error:
    sharded.read_params(_checkpoint_dir(),
                        checkpoints.t5_param_shapes(t5_1_0))
  message = str(error.value)
  assert "4 missing" in message
  assert "9 in the checkpoint but not expected" in message
  assert "encoder/layers_1/mlp/wi_1/kernel: [4, 8]" in message
  assert "decoder/logits_dense/kernel: [4, 32128]" in message
  assert "logits_via_embedding=False" in message
  assert str(_checkpoint_dir()) in message


def test_not_a_t5x_tree_is_a_clear_error(tmp_path):
  ckpt = tmp_path / "checkpoint_1"
  ckpt.mkdir()
  (ckpt / "checkpoint").write_bytes(
      serialization.msgpack_serialize({"params": {"w": np.zeros(2)}}))
  with pytest.raises(ValueError, match="not a T5X checkpoint"):
    sharded.open_checkpoint(tmp_path)


def test_relative_checkpoint_path_loads(monkeypatch):
  # tensorstore rejects relative paths; users pass them all the time.
  ckpt = shared_path("fixtures", "t5x_t5_1_1_tiny", "checkpoint_3")
  monkeypatch.chdir(ckpt.parent.parent)
  loaded = sharded.read_params("t5x_t5_1_1_tiny/checkpoint_3")
  assert loaded["token_embedder"]["embedding"].shape == (32128, 4)
