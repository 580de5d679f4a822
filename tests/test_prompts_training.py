"""Prompt-only training: the trainable/frozen split, the step, the counts."""

import functools

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import tiny_config
from prompt_tuning import gin_utils
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import PromptTransformer
from prompt_tuning.prompts import freezing
from prompt_tuning.training import steps
from prompt_tuning.training import train_state

CONFIG = tiny_config(num_encoder_layers=1, num_decoder_layers=1,
                     dropout_rate=0.1)
MUST_FREEZE = (r"token_embedder/.*", r"encoder/.*", r"decoder/.*")


def _setup(num_prompts=None):
  model = EncoderDecoderModel(PromptTransformer(
      CONFIG, prompt_length=4, num_prompts=num_prompts))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), 8, 5))["params"]
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  tgt = jax.random.randint(k2, (2, 5), 2, CONFIG.vocab_size)
  batch = {
      "encoder_input_tokens": jax.random.randint(k1, (2, 8), 2,
                                                 CONFIG.vocab_size),
      "decoder_input_tokens": jnp.concatenate(
          [jnp.zeros((2, 1), jnp.int32), tgt[:, :-1]], 1),
      "decoder_target_tokens": tgt,
  }
  if num_prompts:
    batch["prompt_index"] = jnp.array([1, 0], jnp.int32)
  return model, params, batch


def test_split_and_merge_round_trip():
  _, params, _ = _setup()
  trainable, frozen = freezing.split_params(params, freezing.PROMPT_PATTERNS)
  assert list(param_tree.flatten_params(trainable)) == ["prompt/prompt"]
  assert "prompt" not in frozen
  merged = freezing.merge_params(trainable, frozen)
  assert jax.tree_util.tree_structure(merged) == \
      jax.tree_util.tree_structure(params)
  with pytest.raises(ValueError, match="in both"):
    freezing.merge_params(trainable, params)


def test_check_split_catches_bad_patterns():
  _, params, _ = _setup()
  assert freezing.check_split(params, freezing.PROMPT_PATTERNS,
                              MUST_FREEZE) == ["prompt/prompt"]
  with pytest.raises(ValueError, match="'promt/prompt' matches no parameter"):
    freezing.check_split(params, ["promt/prompt"])
  with pytest.raises(ValueError, match="nothing frozen"):
    freezing.check_split(params, [".*"])
  with pytest.raises(ValueError, match=r"must stay frozen.*token_embedder"):
    freezing.check_split(params, ["prompt/.*", "token_embedder/.*"],
                         MUST_FREEZE)
  with pytest.raises(TypeError, match="sequence of regexes"):
    freezing.check_split(params, "prompt/prompt")


@pytest.mark.slow
@pytest.mark.parametrize("num_prompts", [None, 2])
def test_one_step_trains_only_the_prompt(num_prompts):
  model, params, batch = _setup(num_prompts)
  tx = optax.adam(0.1)
  state = train_state.create_train_state(
      params, freezing.compute_split(params, freezing.PROMPT_PATTERNS), tx)
  step = jax.jit(functools.partial(steps.train_step, loss_fn=model.loss_fn,
                                   tx=tx))
  new_state, metrics = step(state, batch, jax.random.PRNGKey(2))
  assert metrics["grad_norm"] > 0 and np.isfinite(metrics["loss"])
  assert int(new_state.step) == 1
  flat_old = param_tree.flatten_params(params)
  flat_new = param_tree.flatten_params(new_state.params)
  assert flat_old.keys() == flat_new.keys()
  for name, old in flat_old.items():
    if name == "prompt/prompt":
      assert not np.array_equal(flat_new[name], old)
    else:
      np.testing.assert_array_equal(flat_new[name], old, err_msg=name)
  # Optimizer state exists for the prompt only (Adam: count, mu, nu).
  shapes = {tuple(x.shape) for x in jax.tree_util.tree_leaves(
      new_state.opt_state)}
  assert shapes == {(), params["prompt"]["prompt"].shape}
  mu = new_state.opt_state[0].mu
  assert list(param_tree.flatten_params(mu)) == ["prompt/prompt"]
  # For a bank, every slot the batch uses gets a gradient.
  if num_prompts:
    grads, _ = steps.trainable_gradients(model.loss_fn, state, batch, None, 1)
    assert np.all(np.abs(np.asarray(grads["prompt"]["prompt"])) > 0)


@pytest.mark.slow
def test_gradients_exist_only_for_trainable_leaves():
  model, params, batch = _setup()
  tx = optax.sgd(0.1)
  state = train_state.create_train_state(
      params, freezing.compute_split(params, freezing.PROMPT_PATTERNS), tx)
  grads, _ = steps.trainable_gradients(model.loss_fn, state, batch, None, 1)
  assert list(param_tree.flatten_params(grads)) == ["prompt/prompt"]
  assert float(jnp.abs(grads["prompt"]["prompt"]).sum()) > 0
  # Microbatched accumulation gives the full batch's gradient (summed loss).
  micro, _ = steps.trainable_gradients(model.loss_fn, state, batch, None, 2)
  np.testing.assert_allclose(micro["prompt"]["prompt"],
                             grads["prompt"]["prompt"], rtol=1e-5, atol=1e-6)


def test_full_finetuning_must_be_asked_for():
  _, params, _ = _setup()
  tx = optax.sgd(0.1)
  with pytest.raises(ValueError, match="nothing frozen"):
    freezing.compute_split(params, (".*",))
  state = train_state.create_train_state(
      params, freezing.compute_split(params, (".*",),
                                     allow_all_trainable=True), tx)
  assert not state.frozen


def _gin_param_shapes(size: str):
  gin.clear_config()
  try:
    gin_utils.parse_gin([f"models/t5_1_1_{size}.gin", "prompts/prompt.gin"],
                        [])
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    return model.module.config, model.param_shapes()
  finally:
    gin.clear_config()


# T5 1.1 sizes (parameters) with 100 prompt tokens, computed by
# `count_trainable` over `jax.eval_shape`; see test below.
EXPECTED_COUNTS = {
    "small": (51_200, 76_961_152),
    "base": (76_800, 247_577_856),
    "xxl": (409_600, 11_135_332_352),
}


@pytest.mark.parametrize("size", sorted(EXPECTED_COUNTS))
def test_trainable_parameter_counts(size):
  config, shapes = _gin_param_shapes(size)
  assert isinstance(shapes["prompt"]["prompt"], jax.ShapeDtypeStruct)
  trainable = freezing.count_trainable(shapes, freezing.PROMPT_PATTERNS)
  total = freezing.count_params(shapes)
  assert trainable == 100 * config.emb_dim
  assert (trainable, total - trainable) == EXPECTED_COUNTS[size]
  print(f"T5 1.1 {size}: {trainable:,} trainable of {total:,} "
        f"({100 * trainable / total:.4f}%)")
