"""The T5X checkpoints we write hold what T5X's own restore expects.

The reference is the T5X-written fixture (shared/fixtures/PROVENANCE.md):
T5 1.1 tiny, step 3, Adafactor without momentum. Our export of the same
parameters must have its msgpack tree: the same names, inline arrays where
it has them (dtype, shape), zarr folders where it has them (same folder
name, dtype, shape, compressor), `state/param_states` with the slots
{m, v, v_col, v_row} of every parameter and an int32 `state/step`.
"""

from helpers import T5X_TINY, T5X_TINY_CONFIG, shared_path
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import checkpoints
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import t5x
from prompt_tuning.checkpoints import t5x_adafactor
from prompt_tuning.training import optimizers
from prompt_tuning.training import trainer
from prompt_tuning.training.train_state import TrainState


def _tree(ckpt_dir):
  return t5x.read_checkpoint_tree(ckpt_dir)


def _structure(tree):
  """{name: description} of every msgpack leaf: inline dtype and shape, or a
  zarr spec's folder, dtype, shape and compressor."""
  out = {}
  for name, leaf in t5x.split_tree(tree)[0].items():
    leaf = np.asarray(leaf)
    out[name] = ("inline", leaf.dtype.str, leaf.shape)
  for name, spec in t5x.split_tree(tree)[1].items():
    meta = spec["metadata"]
    out[name] = ("zarr", spec["driver"], spec["kvstore"]["path"],
                 meta["dtype"], tuple(meta["shape"]),
                 meta["compressor"]["id"])
  return out


@pytest.fixture(scope="module")
def fixture_params():
  return sharded.read_params(shared_path(*T5X_TINY),
                             checkpoints.t5_param_shapes(T5X_TINY_CONFIG))


def test_export_has_the_t5x_fixture_structure(tmp_path, fixture_params):
  ours = _tree(t5x.save_t5x_checkpoint(tmp_path, fixture_params, 3))
  theirs = _tree(shared_path(*T5X_TINY))
  assert sorted(ours) == sorted(theirs) == ["optimizer", "version"]
  assert ours["version"] == theirs["version"]
  assert sorted(ours["optimizer"]) == sorted(theirs["optimizer"])
  assert sorted(ours["optimizer"]["state"]) == ["param_states", "step"]
  step = np.asarray(ours["optimizer"]["state"]["step"])
  assert step.dtype == np.int32 and step.shape == () and step == 3
  for part in ("target", "state"):
    want = _structure(theirs["optimizer"][part])
    got = _structure(ours["optimizer"][part])
    assert sorted(got) == sorted(want), part
    for name in want:
      assert got[name] == want[name], (part, name)
  # A fresh state (no optimizer at hand) is T5X's initial one: zeros.
  slots = t5x.split_tree(ours["optimizer"]["state"]["param_states"])[0]
  assert all(not np.any(value) for value in slots.values())


def test_export_round_trips_through_our_reader(tmp_path, fixture_params):
  path = t5x.save_t5x_checkpoint(tmp_path, fixture_params, 3)
  with sharded.open_checkpoint(tmp_path) as record:
    assert record.path == path and record.step == 3
    assert not any(name.endswith(t5x_adafactor.SLOTS)
                   for name in record.names)
  back = checkpoints.flatten_params(sharded.read_params(
      path, checkpoints.t5_param_shapes(T5X_TINY_CONFIG)))
  want = checkpoints.flatten_params(fixture_params)
  assert sorted(back) == sorted(want)
  for name, value in want.items():
    np.testing.assert_array_equal(back[name], value)


def test_slot_shapes_follow_t5x_factoring():
  # [vocab, embed]: v_row drops the largest dimension, v_col the second.
  assert t5x_adafactor.slot_shapes((32128, 768)) == {
      "m": (1,), "v": (1,), "v_col": (32128,), "v_row": (768,)}
  # Square: the later dimension counts as the largest.
  assert t5x_adafactor.slot_shapes((768, 768)) == {
      "m": (1,), "v": (1,), "v_col": (768,), "v_row": (768,)}
  # Second-largest dimension under 128, or a vector: unfactored.
  assert t5x_adafactor.slot_shapes((100, 768)) == {
      "m": (1,), "v": (100, 768), "v_col": (1,), "v_row": (1,)}
  assert t5x_adafactor.slot_shapes((4,), momentum=True) == {
      "m": (4,), "v": (4,), "v_col": (1,), "v_row": (1,)}


@pytest.mark.parametrize("momentum", [None, 0.9])
def test_trained_slots_are_exported(tmp_path, fixture_params, momentum):
  # A trainable prompt (unfactored) and a factored [256, 192] matrix, one
  # Adafactor step on them; the frozen parameters keep zero slots.
  rng = np.random.default_rng(0)
  trainable = {"prompt": {"prompt": jnp.asarray(rng.normal(size=(5, 4)),
                                                jnp.float32)},
               "extra": {"kernel": jnp.asarray(rng.normal(size=(256, 192)),
                                               jnp.float32)}}
  tx = optimizers.adafactor(momentum=momentum)
  opt_state = tx.init(trainable)
  grads = jax.tree_util.tree_map(lambda x: x * 0.5 + 1.0, trainable)
  _, opt_state = tx.update(grads, opt_state, trainable)
  state = TrainState(step=jnp.asarray(1, jnp.int32), trainable=trainable,
                     frozen=fixture_params, opt_state=opt_state)
  path = trainer.export_t5x_checkpoint(str(tmp_path), state, keep=1)
  assert path.endswith("checkpoint_1")
  flat = t5x.split_tree(
      _tree(tmp_path / "checkpoint_1")["optimizer"]["state"]["param_states"]
  )[0]
  ours = optimizers.adafactor_slots(opt_state)
  assert sorted(ours["extra/kernel"]) == (
      ["m", "v", "v_col", "v_row"] if momentum else ["v", "v_col", "v_row"])
  for name in ("prompt/prompt", "extra/kernel"):
    shape = checkpoints.flatten_params(trainable)[name].shape
    for slot, want_shape in t5x_adafactor.slot_shapes(
        shape, momentum=bool(momentum)).items():
      value = flat[f"{name}/{slot}"]
      assert value.shape == want_shape and value.dtype == np.float32
      if slot in ours[name] and want_shape != (1,):
        np.testing.assert_array_equal(value, np.asarray(ours[name][slot]))
        assert np.any(value), (name, slot)
  assert flat["extra/kernel/v_row"].shape == (192,)
  assert flat["extra/kernel/v_col"].shape == (256,)
  assert not np.any(flat["token_embedder/embedding/v"])
  back = sharded.read_params(path)
  np.testing.assert_array_equal(back["prompt"]["prompt"],
                                np.asarray(trainable["prompt"]["prompt"]))


def test_slots_of_another_layout_become_zeros():
  # E.g. an optimizer run with min_dim_size_to_factor=2.
  slots = {"v_row": np.ones((8,)), "v_col": np.ones((4,)),
           "v": np.zeros((1,))}
  state = t5x_adafactor.param_state((8, 4), slots)
  assert state["v"].shape == (8, 4) and not np.any(state["v"])
