"""The memory plan: exact parameter and optimizer shard sizes from shapes
alone (checked against real shards on the 8 fake CPU devices), factored
Adafactor state, and the `python -m prompt_tuning.plan` command."""

import contextlib
import io
import math

import flax.linen as nn
import gin
import jax
import optax
import pytest

from helpers import tiny_config
from prompt_tuning import partitioning
from prompt_tuning import plan as plan_cli
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.models import T5Config
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.partitioning import memory
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts.models import PromptTransformer
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioned

# Uneven on purpose on a 4-way model axis: 3 heads (joined_kv 6 and the
# relative-position table stay whole); mlp 8 and vocab 64 split.
SMALL = T5Config(vocab_size=64, emb_dim=8, num_heads=3, head_dim=2, mlp_dim=8,
                 num_encoder_layers=2, num_decoder_layers=1,
                 relative_attention_num_buckets=4,
                 relative_attention_max_distance=8)
LENGTHS = {"inputs": 6, "targets": 3}


def _model(config: T5Config = SMALL, prompt_length: int = 5):
  return EncoderDecoderModel(PromptTransformer(config,
                                               prompt_length=prompt_length))


def _plan(boxed, mesh_shape, patterns=freezing.PROMPT_PATTERNS, tx=None,
          config=SMALL, batch_size=8):
  return memory.plan_memory(
      boxed, mesh_shape, patterns, tx, batch_size, LENGTHS,
      memory.ActivationDims.from_config(config), prompt_length=5)


def _device_bytes(tree, device) -> int:
  """Bytes of `tree`'s shards on `device`."""
  return sum(s.data.nbytes for leaf in jax.tree_util.tree_leaves(tree)
             for s in leaf.addressable_shards if s.device == device)


def test_one_device_holds_every_parameter_from_init_shapes():
  config = tiny_config()
  boxed = _model(config).init_shapes(6, 3)["params"]
  leaves = jax.tree_util.tree_leaves(nn.unbox(boxed))
  total = sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)
  plan = _plan(boxed, {"data": 1, "model": 1}, config=config)
  u = plan.usage
  assert u["frozen"].per_device + u["trainable"].per_device == total
  assert u["frozen"].logical + u["trainable"].logical == total
  prompt_size = 5 * config.emb_dim  # The [5, emb_dim] f32 prompt.
  assert u["trainable"].per_device == prompt_size * 4
  assert u["gradients"] == u["trainable"]
  assert plan.num_trainable == prompt_size
  assert plan.num_trainable + plan.num_frozen == sum(
      math.prod(x.shape) for x in leaves)


@pytest.mark.slow
def test_shards_on_a_2x4_mesh_match_real_arrays():
  model = _model()
  boxed = model.init(jax.random.PRNGKey(0), 6, 3)["params"]
  mesh = partitioning.create_mesh(mesh_shape=(2, 4))
  shardings = partitioning.param_shardings(boxed, mesh)
  params = jax.device_put(nn.unbox(boxed), shardings)
  device = mesh.devices.flat[0]

  plans = memory.param_leaf_plans(boxed, {"data": 2, "model": 4})
  flat = param_tree.flatten_params(params)
  split = 0
  for name, p in plans.items():
    real = sum(s.data.nbytes for s in flat[name].addressable_shards
               if s.device == device)
    assert p.device_bytes == real, name
    if "model" in jax.tree_util.tree_leaves(tuple(p.spec)):
      assert p.device_bytes * 4 == p.logical_bytes, name
      split += 1
  assert split > 0  # vocab and mlp split; 3 heads do not.
  assert plans["token_embedder/embedding"].shard_shape == (16, 8)
  assert plans["encoder/relpos_bias/rel_embedding"].shard_shape == (3, 4)

  plan = _plan(boxed, {"data": 2, "model": 4})
  trainable, frozen = freezing.split_params(params, freezing.PROMPT_PATTERNS)
  assert plan.usage["frozen"].per_device == _device_bytes(frozen, device)
  assert plan.usage["trainable"].per_device == _device_bytes(trainable, device)


def test_optimizer_shards_match_optimizer_state_shardings():
  model = _model()
  boxed = model.init(jax.random.PRNGKey(0), 6, 3)["params"]
  mesh = partitioning.create_mesh(mesh_shape=(2, 4))
  params = nn.unbox(boxed)
  specs = partitioning.mesh_specs(boxed, mesh)
  tx = optimizers.adafactor(min_dim_size_to_factor=4)  # Factor these small.
  state = tx.init(params)
  shardings = partitioned.optimizer_state_shardings(state, params, specs, mesh)
  real = _device_bytes(jax.device_put(state, shardings), mesh.devices.flat[0])
  plan = _plan(boxed, {"data": 2, "model": 4}, patterns=(".*",), tx=tx)
  assert plan.usage["optimizer"].per_device == real


def test_adafactor_state_is_factored():
  config = T5Config(vocab_size=512, emb_dim=256, num_heads=4, head_dim=64,
                    mlp_dim=512, num_encoder_layers=2, num_decoder_layers=2)
  boxed = _model(config).init_shapes(6, 3)["params"]
  mesh = {"data": 1, "model": 1}
  ada = _plan(boxed, mesh, (".*",), optimizers.adafactor(), config)
  adam = _plan(boxed, mesh, (".*",), optax.adam(1e-3), config)
  params = ada.usage["trainable"].logical
  assert ada.usage["optimizer"].logical < 0.05 * params
  assert adam.usage["optimizer"].logical >= 2 * params  # mu and nu.
  # A prompt of 5 rows is not factored: one second moment per entry.
  prompt = _plan(boxed, mesh, freezing.PROMPT_PATTERNS,
                 optimizers.adafactor(), config)
  assert prompt.usage["optimizer"].logical >= prompt.usage["trainable"].logical


def test_mesh_that_does_not_exist_here():
  boxed = _model().init_shapes(6, 3)["params"]
  big = _plan(boxed, {"data": 4, "model": 8}, batch_size=32)
  one = _plan(boxed, {"data": 1, "model": 1}, batch_size=32)
  assert big.num_devices == 32 and len(jax.devices()) == 8
  assert big.usage["frozen"].logical == one.usage["frozen"].logical
  assert big.usage["frozen"].per_device < one.usage["frozen"].per_device
  assert big.usage["activations"].per_device < one.usage[
      "activations"].per_device
  assert big.usage["activations"].logical == one.usage["activations"].logical


def test_activation_estimate_scales_with_batch_and_data_ways():
  dims = memory.ActivationDims.from_config(SMALL)
  one, full = memory.activation_bytes(dims, 8, 6, 3, {"data": 1, "model": 1})
  assert one == full
  half, _ = memory.activation_bytes(dims, 8, 6, 3, {"data": 2, "model": 1})
  assert half * 2 == one
  longer, _ = memory.activation_bytes(dims, 8, 6, 3, {"data": 1, "model": 1},
                                      prompt_length=10)
  assert longer > one
  bf16, _ = memory.activation_bytes(dims, 8, 6, 3, {"data": 1, "model": 1},
                                    activation_dtype=jax.numpy.bfloat16)
  assert bf16 < one


def test_parse_helpers():
  assert memory.parse_mesh("4x8") == {"data": 4, "model": 8}
  assert memory.parse_bytes("16GiB") == 16 * 2**30
  assert memory.parse_bytes("80GB") == 80 * 10**9
  with pytest.raises(ValueError):
    memory.parse_mesh("4-8")
  with pytest.raises(ValueError):
    memory.parse_bytes("16 parsecs")
  with pytest.raises(ValueError):
    memory.abstract_mesh({"pipeline": 2})


def _run(argv) -> str:
  out = io.StringIO()
  try:
    with contextlib.redirect_stdout(out):
      assert plan_cli.main(argv) == 0
  finally:
    gin.clear_config()
  return out.getvalue()


def test_cli_prints_the_plan_of_one_model():
  text = _run(["--gin_file=models/t5_1_1_tiny.gin",
               "--gin_file=prompts/prompt.gin", "--gin.PROMPT_LENGTH=7",
               "--mesh=2x4", "--batch_size=8", "--inputs_length=16",
               "--targets_length=4", "--device_memory=1GiB"])
  for row in ("frozen", "trainable", "gradients", "optimizer",
              "activations (estimate)", "**total**"):
    assert f"| {row} |" in text
  assert "28 trainable" in text  # The [7, 4] prompt.
  assert "fits in 1.00 GiB" in text


def test_cli_sweep_prints_one_table():
  text = _run(["--gin_file=prompts/prompt.gin", "--models=tiny,mini",
               "--meshes=1x1@80GB,4x8@1KiB", "--batch_size=4",
               "--inputs_length=16", "--targets_length=4"])
  lines = [l for l in text.splitlines() if l.startswith("|")]
  assert len(lines) == 4  # Header, rule, two models.
  assert "1x1 (74.51 GiB)" in lines[0] and "4x8 (1.00 KiB)" in lines[0]
  for line in lines[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2].endswith(" fits") and cells[3].endswith(" **no**")
