"""The state layer (`training/state.py`) on 8 fake CPU devices: the frozen
base goes from the T5X-written checkpoint straight into its shardings (a
(2, 4) mesh holds a quarter of each model-split parameter per device, no
device ever receives a whole copy), the checkpoint is read once, only the
missing parameters are initialised, and a deep prompt trains from
prompts/deep_prompt.gin as shipped."""

import collections
import math

import flax.linen as nn
import gin
import jax
import numpy as np
import pytest

from helpers import T5X_TINY, prompt_run_flags, shared_path
from prompt_tuning import gin_utils
from prompt_tuning import partitioning
from prompt_tuning import train
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import sharded
from prompt_tuning.checkpoints import t5x
from prompt_tuning.prompts import freezing
from prompt_tuning.training import optimizers
from prompt_tuning.training import state as state_lib

LENGTHS = {"inputs": 16, "targets": 4}


def _fixture_model(prompt="prompts/prompt.gin", bindings=()):
  gin.clear_config()
  try:
    gin_utils.parse_gin(["models/t5_1_1_tiny.gin", prompt],
                        ["PROMPT_LENGTH = 4", *bindings])
    return gin.query_parameter("%MODEL").scoped_configurable_fn()
  finally:
    gin.clear_config()


@pytest.fixture
def reads(monkeypatch):
  """Every array read of `checkpoints.sharded`: (array, slice shape)."""
  seen = []
  real = sharded._read_slice  # pylint: disable=protected-access

  def counting(source, handle, index):
    out = real(source, handle, index)
    seen.append((source.name, tuple(out.shape)))
    return out

  monkeypatch.setattr(sharded, "_read_slice", counting)
  return seen


@pytest.fixture
def placed(monkeypatch):
  """The shape of every host array `jax.device_put` sends to a device."""
  seen = []
  real = jax.device_put

  def recording(x, *args, **kwargs):
    if isinstance(x, np.ndarray):
      seen.append(tuple(x.shape))
    return real(x, *args, **kwargs)

  monkeypatch.setattr(jax, "device_put", recording)
  return seen


def test_frozen_base_is_read_once_straight_into_a_2x4_mesh(reads, placed,
                                                           monkeypatch):
  opened = collections.Counter()
  real_open = sharded.open_checkpoint

  def counting_open(path, **kwargs):
    opened[str(path)] += 1
    return real_open(path, **kwargs)

  monkeypatch.setattr(sharded, "open_checkpoint", counting_open)
  ckpt = str(shared_path(*T5X_TINY))
  model = _fixture_model()
  boxed = state_lib.model_shapes(model, LENGTHS)
  split = freezing.compute_split(boxed, model.trainable_patterns)
  mesh = partitioning.create_mesh(mesh_shape=(2, 4))
  built = state_lib.build_train_state(model, mesh, optimizers.adafactor(),
                                      ckpt, split, boxed_params=boxed)
  assert sum(opened.values()) == 1
  state_reads = list(reads)
  reference = param_tree.flatten_params(sharded.read_params(ckpt))
  reads[:] = state_reads  # The reference's own (whole) reads left out.
  frozen = param_tree.flatten_params(built.state.frozen)
  assert set(frozen) == set(reference)  # Only the prompt is not from it.
  specs = param_tree.flatten_params(partitioning.mesh_specs(boxed, mesh))
  split_over_model = [n for n, spec in specs.items() if "model" in
                      jax.tree_util.tree_leaves(tuple(spec))]
  assert "token_embedder/embedding" in split_over_model
  assert len(split_over_model) > 10
  full_shapes = {tuple(v.shape) for n, v in reference.items()
                 if n in split_over_model}
  for name in split_over_model:
    array = frozen[name]
    np.testing.assert_array_equal(jax.device_get(array), reference[name],
                                  err_msg=name)
    ways = math.prod(mesh.shape[a] for a in jax.tree_util.tree_leaves(
        tuple(specs[name])))
    for shard in array.addressable_shards:
      assert shard.data.nbytes * ways == array.nbytes, name
    # Each distinct slice read once (4 model-way slices, however many
    # devices hold one), never the whole array.
    shapes = [shape for array_name, shape in reads if array_name == name]
    assert len(shapes) == ways, (name, shapes)
    assert all(math.prod(shape) * ways == array.size for shape in shapes)
  # No split parameter ever reached a device whole.
  assert full_shapes and not full_shapes & set(placed)
  # Replicated parameters (layer norms) are read once for all 8 devices.
  per_array = collections.Counter(name for name, _ in reads)
  assert per_array["encoder/encoder_norm/scale"] == 1
  assert set(per_array) == set(reference)


def test_only_missing_parameters_are_initialised():
  ckpt = str(shared_path(*T5X_TINY))
  model = _fixture_model()
  boxed = state_lib.model_shapes(model, LENGTHS)
  split = freezing.compute_split(boxed, model.trainable_patterns)
  mesh = partitioning.create_mesh(mesh_shape=(8, 1))
  initial = state_lib.initial_params(model, boxed, mesh, ckpt, split,
                                     jax.random.PRNGKey(0))
  names = param_tree.flatten_params(nn.unbox(boxed))
  assert set(names) - set(initial.loaded) == {"prompt/prompt"}
  assert initial.step == 3
  for name, value in param_tree.flatten_params(initial.params).items():
    assert value.sharding == param_tree.flatten_params(
        initial.shardings)[name], name


def test_a_checkpoint_missing_a_frozen_parameter_fails_before_reading(
    reads, tmp_path):
  ckpt = shared_path(*T5X_TINY)
  params = sharded.read_params(ckpt)
  reads.clear()
  flat = param_tree.flatten_params(params)
  del flat["encoder/layers_0/mlp/wo/kernel"]
  t5x.save_t5x_checkpoint(tmp_path, param_tree.unflatten_params(flat), 3)
  model = _fixture_model()
  boxed = state_lib.model_shapes(model, LENGTHS)
  split = freezing.compute_split(boxed, model.trainable_patterns)
  with pytest.raises(ValueError, match="encoder/layers_0/mlp/wo/kernel"):
    state_lib.initial_params(model, boxed, partitioning.create_mesh(),
                             str(tmp_path / "checkpoint_3"), split,
                             jax.random.PRNGKey(0))
  assert not reads


def test_models_declare_what_they_train():
  assert _fixture_model().trainable_patterns == ("prompt/prompt",)
  deep = _fixture_model("prompts/deep_prompt.gin", ["PREFIX_LENGTH = 2"])
  assert deep.trainable_patterns == ("deep_prompt/.*",)
  head = _fixture_model("prompts/deep_prompt.gin",
                        ["PREFIX_LENGTH = 2", "NUM_CLASSES = 2"])
  assert head.trainable_patterns == ("deep_prompt/.*", "classifier/.*")
  both = _fixture_model("prompts/deep_and_soft_prompt.gin",
                        ["PREFIX_LENGTH = 2"])
  assert both.trainable_patterns == ("prompt/prompt", "deep_prompt/.*")


@pytest.mark.slow
def test_deep_prompt_trains_from_its_gin_file_as_shipped(local_super_glue,
                                                         tmp_path, capsys):
  model_dir = tmp_path / "deep"
  assert train.main(prompt_run_flags(
      model_dir, "--gin.PREFIX_LENGTH=2", prompt="prompts/deep_prompt.gin",
      lengths={"inputs": 32, "targets": 8}, train_steps=2,
      prompt_length=None)) == 0
  gin.clear_config()
  assert "train loss=" in capsys.readouterr().out
  import json  # pylint: disable=g-import-not-at-top
  meta = json.loads((model_dir / "checkpoints" / "2" / "meta" /
                     "metadata").read_text())
  assert meta["trainable_patterns"] == ["deep_prompt/.*"]
