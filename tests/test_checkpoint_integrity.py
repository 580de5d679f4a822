"""Checkpoints are verified, not trusted (`checkpoints.integrity`, the checks
of `checkpoints.t5x` and `checkpoints.sharded`, the frozen-base record of
`training.checkpointer`).

Every probe damages a copy in `tmp_path`: of the T5X-written fixture (no
manifest: structural checks only) or of a checkpoint written here with
`t5x.save_t5x_checkpoint` (with a manifest: every file's checksum too). Each
refusal names the file and the fix.
"""

import json
import logging
import os
import pathlib
import shutil

from helpers import T5X_TINY, T5X_TINY_CONFIG, rte_train_cfg, shared_path
from helpers import tiny_config
import numpy as np
import pytest

from prompt_tuning import errors
from prompt_tuning.checkpoints import hf_export
from prompt_tuning.checkpoints import integrity
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import t5x
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts.models import PromptTransformer
from prompt_tuning.training import checkpointer
from prompt_tuning.training import trainer

EMBEDDING = param_tree.EMBEDDING
EMBEDDING_FOLDER = "target.token_embedder.embedding"
FIX = "good copy"
CONFIG = tiny_config()


def _snapshot(directory: pathlib.Path) -> dict[str, tuple[int, str]]:
  return {str(p.relative_to(directory)): (p.stat().st_size,
                                          integrity.file_checksum(p))
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", autouse=True)
def shared_fixture_unchanged():
  """Nothing here writes outside tmp_path: the shared fixture is as it was."""
  fixture = shared_path(*T5X_TINY[:-1])
  before = _snapshot(fixture)
  yield
  assert _snapshot(fixture) == before


def _fixture_copy(tmp_path: pathlib.Path) -> pathlib.Path:
  """A writable copy of the T5X-written checkpoint (it has no manifest)."""
  copy = tmp_path / "t5x_written" / T5X_TINY[-1]
  shutil.copytree(shared_path(*T5X_TINY), copy,
                  copy_function=shutil.copyfile)
  for root, dirs, _ in os.walk(copy):
    for d in dirs:
      os.chmod(os.path.join(root, d), 0o755)
  os.chmod(copy, 0o755)
  assert not (copy / integrity.MANIFEST_NAME).exists()
  return copy


def _params(seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {name: rng.normal(size=s.shape).astype(np.float32) for name, s in
          param_tree.flatten_params(param_tree.t5_param_shapes(CONFIG)
                                    ).items()}


def _ours(tmp_path: pathlib.Path, seed: int = 0,
          name: str = "ours") -> pathlib.Path:
  """A checkpoint written here: the [128, 8] embedding in 4 chunks."""
  return t5x.save_t5x_checkpoint(
      tmp_path / name, _params(seed), step=7,
      chunks=lambda shape, _: [max(1, shape[0] // 4), *shape[1:]])


def _assert_names_file_and_fix(error: BaseException, path) -> None:
  message = str(error)
  assert os.fspath(path) in message, message
  assert FIX in message, message
  assert isinstance(error, errors.ConfigError)  # The CLI's one-line errors.


# G1: a deleted chunk is refused, not read as zeros.
@pytest.mark.parametrize("which", ["t5x_written", "ours"])
def test_a_deleted_chunk_fails_naming_the_folder_and_the_chunk(tmp_path,
                                                               which):
  ckpt = _fixture_copy(tmp_path) if which == "t5x_written" else _ours(
      tmp_path)
  folder = ckpt / EMBEDDING_FOLDER
  (folder / "3.0").unlink()
  with sharded.open_checkpoint(ckpt) as record:
    record.read("encoder/layers_0/mlp/wo/kernel")  # Others still read.
    with pytest.raises(integrity.DamagedCheckpointError,
                       match=r"missing chunk 3\.0") as caught:
      record.read(EMBEDDING)
  _assert_names_file_and_fix(caught.value, folder / "3.0")
  assert "zeros" in str(caught.value)


# G2: a .zarray that disagrees with the msgpack is refused before reading.
@pytest.mark.parametrize("field, value, recorded", [
    ("dtype", "<i4", "<f4"), ("shape", [32128, 2], [32128, 4])])
def test_a_zarray_disagreeing_with_the_msgpack_is_refused(
    tmp_path, monkeypatch, field, value, recorded):
  ckpt = _fixture_copy(tmp_path)
  zarray = ckpt / EMBEDDING_FOLDER / t5x.ZARR_METADATA
  metadata = json.loads(zarray.read_text())
  assert metadata[field] == recorded
  zarray.write_text(json.dumps({**metadata, field: value}))
  reads = []
  real = sharded._read_slice  # pylint: disable=protected-access

  def counting(*args):
    reads.append(args)
    return real(*args)

  monkeypatch.setattr(sharded, "_read_slice", counting)
  with sharded.open_checkpoint(ckpt) as record:
    with pytest.raises(integrity.DamagedCheckpointError) as caught:
      record.read(EMBEDDING)
  assert not reads  # Refused before any data was read.
  _assert_names_file_and_fix(caught.value, zarray)
  message = str(caught.value)
  assert str(value) in message and str(recorded) in message, message
  assert str(ckpt / t5x.CHECKPOINT_FILE) in message


# G12: a truncated msgpack file names its path.
@pytest.mark.parametrize("which, error", [
    ("t5x_written", integrity.DamagedCheckpointError),
    ("ours", integrity.ChecksumMismatchError)])
def test_a_truncated_msgpack_fails_naming_the_file(tmp_path, which, error):
  ckpt = _fixture_copy(tmp_path) if which == "t5x_written" else _ours(
      tmp_path)
  msgpack = ckpt / t5x.CHECKPOINT_FILE
  data = msgpack.read_bytes()
  msgpack.write_bytes(data[:len(data) // 2])
  with pytest.raises(error) as caught:
    sharded.open_checkpoint(ckpt)
  _assert_names_file_and_fix(caught.value, msgpack)


def test_a_flipped_byte_in_a_chunk_of_ours_fails_naming_the_file(tmp_path):
  ckpt = _ours(tmp_path)
  chunk = ckpt / EMBEDDING_FOLDER / "1.0"
  data = bytearray(chunk.read_bytes())
  data[len(data) // 2] ^= 0x01
  chunk.write_bytes(bytes(data))
  with sharded.open_checkpoint(ckpt) as record:
    assert record.checksums.manifest is not None
    record.read("encoder/layers_0/mlp/wo/kernel")  # Others still read.
    with pytest.raises(integrity.ChecksumMismatchError) as caught:
      record.read(EMBEDDING)
    _assert_names_file_and_fix(caught.value, chunk)
    with pytest.raises(integrity.ChecksumMismatchError):
      record.read(EMBEDDING)  # Not taken on a second try either.
    with pytest.raises(integrity.ChecksumMismatchError):
      record.content_fingerprint()


def test_a_file_added_to_an_array_folder_of_ours_is_refused(tmp_path):
  ckpt = _ours(tmp_path)
  stray = ckpt / EMBEDDING_FOLDER / "4.0"
  shutil.copyfile(ckpt / EMBEDDING_FOLDER / "0.0", stray)
  with sharded.open_checkpoint(ckpt) as record:
    with pytest.raises(integrity.ChecksumMismatchError,
                       match="not listed") as caught:
      record.read(EMBEDDING)
  _assert_names_file_and_fix(caught.value, stray)


def test_our_checkpoints_end_with_a_complete_manifest(tmp_path):
  ckpt = _ours(tmp_path)
  manifest = integrity.read_manifest(ckpt)
  files = {p.relative_to(ckpt).as_posix(): integrity.file_checksum(p)
           for p in ckpt.rglob("*") if p.is_file()
           and p.name != integrity.MANIFEST_NAME}
  assert manifest == files
  assert not list(tmp_path.glob("ours/*.tmp*"))
  expected = _params()
  with sharded.open_checkpoint(ckpt) as record:
    for name, value in param_tree.flatten_params(record.read_all()).items():
      np.testing.assert_array_equal(value, expected[name], err_msg=name)
    # Every file the reads used was verified against the manifest.
    assert record.checksums.checksums == {
        n: c for n, c in manifest.items()
        if n.startswith(("checkpoint", "target."))}


def test_content_fingerprint_tells_weights_apart_and_reuses_checksums(
    tmp_path, monkeypatch):
  a, same = _ours(tmp_path, 0, "a"), _ours(tmp_path, 0, "same")
  other = _ours(tmp_path, 1, "other")
  hashed = []
  real = integrity.file_checksum
  monkeypatch.setattr(integrity, "file_checksum",
                      lambda p: hashed.append(p) or real(p))
  with sharded.open_checkpoint(a) as record:
    record.read_all()
    read_files = list(hashed)
    fingerprint = record.content_fingerprint()
    assert hashed == read_files  # Nothing hashed again.
  assert len(read_files) == len(set(read_files))  # Each file once.
  assert len(fingerprint) == 12
  with sharded.open_checkpoint(same) as record:  # Unread: hashed now.
    assert record.content_fingerprint() == fingerprint
  with sharded.open_checkpoint(other) as record:
    assert record.content_fingerprint() != fingerprint
  # T5X-written (no manifest): recorded, not verified; the same either way.
  fixture = shared_path(*T5X_TINY)
  with sharded.open_checkpoint(fixture) as record:
    assert record.checksums.manifest is None
    unread = record.content_fingerprint()
  with sharded.open_checkpoint(fixture) as record:
    record.read_all()
    assert record.content_fingerprint() == unread


def test_hf_exports_write_a_manifest_that_reads_verify(tmp_path):
  out = hf_export.write_hf_checkpoint(tmp_path / "hf", _params(), CONFIG)
  manifest = integrity.read_manifest(out)
  assert set(manifest) == {"config.json", "model.safetensors"}
  with sharded.open_checkpoint(out) as record:
    record.read_all()
    fingerprint = record.content_fingerprint()
  weights = out / "model.safetensors"
  data = bytearray(weights.read_bytes())
  data[-3] ^= 0x01  # Tensor data, not the header.
  weights.write_bytes(bytes(data))
  with pytest.raises(integrity.ChecksumMismatchError) as caught:
    sharded.read_params(out)
  _assert_names_file_and_fix(caught.value, weights)
  assert len(fingerprint) == 12


def test_check_frozen_base_compares_fingerprints(caplog):
  shapes = {"a": np.zeros((2, 3))}
  record = checkpointer.frozen_base_record(shapes, "/ckpt/checkpoint_3",
                                           "aaaaaaaaaaaa")
  checkpointer.check_frozen_base(record, dict(record))
  changed = {**record, "fingerprint": "bbbbbbbbbbbb"}
  with pytest.raises(checkpointer.FrozenBaseMismatchError) as caught:
    checkpointer.check_frozen_base(record, changed)
  message = str(caught.value)
  assert all(s in message for s in ("/ckpt/checkpoint_3", "aaaaaaaaaaaa",
                                    "bbbbbbbbbbbb", "new MODEL_DIR"))
  random_init = checkpointer.frozen_base_record(shapes, None)
  assert random_init["fingerprint"] is None
  checkpointer.check_frozen_base(random_init, dict(random_init))
  with pytest.raises(checkpointer.FrozenBaseMismatchError,
                     match="random initialisation"):
    checkpointer.check_frozen_base(random_init, record)
  legacy = {k: v for k, v in record.items() if k != "fingerprint"}
  with caplog.at_level(logging.WARNING):
    checkpointer.check_frozen_base(legacy, changed)  # Cannot tell: resumes.
  assert "no content fingerprint" in caplog.text


# G10: a prompt run does not resume on other weights at the same path.
@pytest.mark.slow  # Two short training runs (~15 s idle).
def test_resume_on_a_different_frozen_checkpoint_is_refused(
    tmp_path, local_super_glue):
  del local_super_glue  # RTE from ../shared.
  base = _fixture_copy(tmp_path)
  model = EncoderDecoderModel(PromptTransformer(T5X_TINY_CONFIG,
                                                prompt_length=3))
  lengths = {"inputs": 16, "targets": 8}
  run = dict(model=model,
             train_dataset_cfg=rte_train_cfg(lengths, batch_size=8),
             model_dir=str(tmp_path / "run"),
             initial_checkpoint_path=str(base), progress=False)
  trainer.train(train_steps=1, **run)
  with sharded.open_checkpoint(base) as record:
    before = record.content_fingerprint()
    params = param_tree.flatten_params(record.read_all())
  params[EMBEDDING] = params[EMBEDDING] * 1.5  # Same shapes, other weights.
  shutil.rmtree(base)
  assert t5x.save_t5x_checkpoint(base.parent, params, step=3) == base
  with sharded.open_checkpoint(base) as record:
    after = record.content_fingerprint()
  assert after != before
  with pytest.raises(checkpointer.FrozenBaseMismatchError) as caught:
    trainer.train(train_steps=2, **run)
  message = str(caught.value)
  assert str(base) in message and before in message and after in message
  assert "INITIAL_CHECKPOINT_PATH" in message and "new MODEL_DIR" in message
