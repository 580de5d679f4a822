"""The model's forward pass jit-compiles on a (2, 4) mesh with named shardings
from the rule table and matches the unsharded logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from prompt_tuning import partitioning
from prompt_tuning.models import Transformer
from prompt_tuning.models.model import EncoderDecoderModel

# 4 heads: the joined heads (20) split 4 ways, as vocabulary and MLP do.
CONFIG = tiny_config(num_heads=4)


def _batch(rng, batch=8, inputs=12, targets=6):
  k1, k2 = jax.random.split(rng)
  enc = jax.random.randint(k1, (batch, inputs), 2, CONFIG.vocab_size)
  enc = enc.at[1, 8:].set(0)
  tgt = jax.random.randint(k2, (batch, targets), 2, CONFIG.vocab_size)
  tgt = tgt.at[2, 4:].set(0)
  dec = jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), tgt[:, :-1]], 1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
          "decoder_target_tokens": tgt}


def test_every_parameter_has_known_logical_axes():
  model = EncoderDecoderModel(Transformer(CONFIG))
  boxed = model.init_shapes(4, 4)
  partitioning.check_logical_axes(boxed["params"])


def test_check_logical_axes_names_the_offending_parameter():
  bad = {"encoder": {"w": jnp.zeros((2, 2))},
         "ok": nn.LogicallyPartitioned(jnp.zeros((2,)), ("embed",)),
         "typo": nn.LogicallyPartitioned(jnp.zeros((2,)), ("embd",))}
  with pytest.raises(ValueError, match=r"encoder/w: no logical axis names"):
    partitioning.check_logical_axes(bad)
  with pytest.raises(ValueError, match=r"typo: axis names \['embd'\]"):
    partitioning.check_logical_axes({"typo": bad["typo"]})


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", [(2, 4), (8, 1)])
def test_sharded_forward_matches_unsharded(mesh_shape):
  assert jax.device_count() == 8, "conftest sets 8 host devices"
  model = EncoderDecoderModel(Transformer(CONFIG))
  boxed = model.init(jax.random.PRNGKey(0), 12, 6)
  params = nn.unbox(boxed)["params"]
  batch = _batch(jax.random.PRNGKey(1))
  expected = jax.jit(model.logits)(params, batch)

  mesh = partitioning.create_mesh(mesh_shape=mesh_shape)
  shardings = partitioning.param_shardings(boxed["params"], mesh)
  # The rule table really shards: vocab and joined heads over `model`.
  if mesh_shape[1] > 1:
    assert shardings["token_embedder"]["embedding"].spec == jax.sharding.PartitionSpec("model", None)
    q = shardings["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert q.spec == jax.sharding.PartitionSpec(None, "model")
  sharded_params = jax.device_put(params, shardings)
  sharded_batch = jax.device_put(batch, partitioning.batch_sharding(mesh))
  with partitioning.mesh_context(mesh):
    fn = jax.jit(model.logits,
                 in_shardings=(shardings, partitioning.batch_sharding(mesh)),
                 out_shardings=partitioning.batch_sharding(mesh))
    logits = fn(sharded_params, sharded_batch)
  assert logits.sharding.spec[0] == "data"
  np.testing.assert_allclose(np.asarray(logits), np.asarray(expected),
                             atol=1e-5, rtol=1e-5)


def test_create_mesh_rejects_impossible_shapes():
  with pytest.raises(ValueError, match="must divide"):
    partitioning.create_mesh(num_partitions=3)
  with pytest.raises(ValueError, match="needs 6 devices"):
    partitioning.create_mesh(mesh_shape=(2, 3))


@pytest.mark.slow
def test_dimensions_the_mesh_cannot_split_are_replicated():
  # 3 heads cannot be split 4 ways: they stay whole, the rest still shards.
  config = tiny_config(num_encoder_layers=1, num_decoder_layers=1)
  assert config.num_heads % 4
  model = EncoderDecoderModel(Transformer(config))
  boxed = model.init(jax.random.PRNGKey(0), 12, 6)
  params = nn.unbox(boxed)["params"]
  mesh = partitioning.create_mesh(mesh_shape=(2, 4))
  shardings = partitioning.param_shardings(boxed["params"], mesh)
  rel = shardings["encoder"]["relpos_bias"]["rel_embedding"]
  assert rel.spec == jax.sharding.PartitionSpec(None, None)
  mlp = shardings["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  assert mlp.spec == jax.sharding.PartitionSpec(None, "model")
  batch = _batch(jax.random.PRNGKey(1))
  expected = model.logits(params, batch)
  with partitioning.mesh_context(mesh):
    logits = jax.jit(model.logits, in_shardings=(
        shardings, partitioning.batch_sharding(mesh)))(
            jax.device_put(params, shardings), batch)
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
