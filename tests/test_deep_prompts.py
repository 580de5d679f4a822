"""Deep prompts (P-Tuning v2): key/value prefixes, the model, the head, gin."""

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import random_batch, tiny_config
from prompt_tuning import gin_utils
from prompt_tuning import partitioning
from prompt_tuning.models import T5Config, Transformer, layers
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.prompts import classification, deep, deep_init

CONFIG = tiny_config()


def make_batch(batch: int = 3, inputs: int = 10, targets: int = 6,
               seed: int = 1):
  """`helpers.random_batch` plus a class `label` in [0, 3)."""
  label = jax.random.randint(jax.random.PRNGKey(seed + 100), (batch,), 0, 3)
  return dict(random_batch(CONFIG.vocab_size, batch, inputs, targets, seed),
              label=label)


def make(seed: int = 0, **kwargs):
  kwargs.setdefault("prefix_length", 4)
  model = EncoderDecoderModel(deep.DeepPromptTransformer(CONFIG, **kwargs))
  boxed = model.init(jax.random.PRNGKey(seed), 10, 6)["params"]
  return model, boxed, nn.unbox(boxed)


def split(params):
  """(deep-prompt params, the rest) by the `deep_prompt` top-level key."""
  rest = {k: v for k, v in params.items() if k != "deep_prompt"}
  return params["deep_prompt"], rest


def prompt_grads(model, params, batch):
  prompt, frozen = split(params)

  def loss(p):
    return model.loss_fn({**frozen, "deep_prompt": p}, batch)[0]
  return jax.jit(jax.grad(loss))(prompt)


# ---------------------------------------------------------------- attention


def _attention(prefix=None, mask=None, bias=None, seed=0):
  attn = layers.MultiHeadDotProductAttention(num_heads=2, head_dim=4)
  x = jax.random.normal(jax.random.PRNGKey(seed), (2, 5, 8))
  params = attn.init(jax.random.PRNGKey(1), x, x)
  kwargs = {} if prefix is None else {"prefix_key": prefix[0],
                                      "prefix_value": prefix[1]}
  return attn.apply(params, x, x, mask, bias, **kwargs)


def test_attention_without_prefix_keeps_parameter_tree():
  attn = layers.MultiHeadDotProductAttention(num_heads=2, head_dim=4)
  x = jnp.ones((1, 3, 8))
  names = jax.tree_util.tree_map(jnp.shape, nn.unbox(attn.init(
      jax.random.PRNGKey(0), x, x)))["params"]
  assert set(names) == {"query", "key", "value", "out"}


def test_attention_prefix_is_attended_and_padding_stays_masked():
  key_mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], jnp.float32)
  mask = layers.make_attention_mask(jnp.ones((2, 5)), key_mask)
  bias = jax.random.normal(jax.random.PRNGKey(5), (1, 2, 5, 5))
  kp = jax.random.normal(jax.random.PRNGKey(2), (1, 3, 2, 4))
  vp = jax.random.normal(jax.random.PRNGKey(3), (1, 3, 2, 4))
  base = _attention(None, mask, bias)
  out = _attention((kp, vp), mask, bias)
  assert out.shape == base.shape
  assert not np.allclose(out, base)  # Every query attends to the prefix.
  out2 = _attention((kp, vp * 2.0), mask, bias)
  assert np.all(np.abs(out2 - out).max(-1) > 1e-4)  # Values matter, all rows.

  # Padded keys (row 0, positions 3-4) stay masked with a prefix present:
  # their content does not leak into the output.
  attn = layers.MultiHeadDotProductAttention(num_heads=2, head_dim=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  params = attn.init(jax.random.PRNGKey(1), x, x)
  x_changed = x.at[0, 3:].set(7.0)
  kw = dict(prefix_key=kp, prefix_value=vp)
  a = attn.apply(params, x, x, mask, bias, **kw)
  b = attn.apply(params, x, x_changed, mask, bias, **kw)
  np.testing.assert_allclose(a[0], b[0], atol=1e-6)


def test_attention_prefix_equals_explicit_keys_with_zero_bias():
  # Prepending is the same as attending to extra key/value positions whose
  # bias is zero and whose mask is one.
  attn = layers.MultiHeadDotProductAttention(num_heads=2, head_dim=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  params = attn.init(jax.random.PRNGKey(1), x, x)
  kp = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 2, 4))
  vp = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 2, 4))
  bias = jax.random.normal(jax.random.PRNGKey(5), (1, 2, 5, 5))
  mask = layers.make_causal_mask(5) * jnp.ones((2, 1, 5, 5))
  out = attn.apply(params, x, x, mask, bias, prefix_key=kp, prefix_value=vp)
  p = params["params"]
  q = (x @ p["query"]["kernel"].value).reshape(2, 5, 2, 4)
  k = jnp.concatenate([kp, (x @ p["key"]["kernel"].value).reshape(2, 5, 2, 4)],
                      1)
  v = jnp.concatenate([vp, (x @ p["value"]["kernel"].value).reshape(
      2, 5, 2, 4)], 1)
  full_bias = jnp.concatenate([jnp.zeros((1, 2, 5, 3)), bias], -1)
  full_mask = jnp.concatenate([jnp.ones((2, 1, 5, 3)), mask], -1)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) + full_bias
  logits = jnp.where(full_mask > 0, logits, -1e10)
  ref = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits), v)
  ref = ref.reshape(2, 5, 8) @ p["out"]["kernel"].value
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_attention_rejects_half_a_prefix():
  with pytest.raises(ValueError, match="together"):
    _attention((jnp.zeros((1, 2, 2, 4)), None))


# -------------------------------------------------------------------- model


@pytest.mark.slow
@pytest.mark.parametrize("reparameterize,decoder_prompt",
                         [(False, False), (True, False), (False, True),
                          (True, True)])
def test_forward_backward_and_prompt_gradients(reparameterize,
                                               decoder_prompt):
  model, boxed, params = make(reparameterize=reparameterize,
                              decoder_prompt=decoder_prompt)
  partitioning.check_logical_axes(boxed)
  stacks = {"encoder", "decoder"} if decoder_prompt else {"encoder"}
  assert set(params["deep_prompt"]) == stacks
  leaf = "embedding" if reparameterize else "prefix"
  for s in stacks:
    assert leaf in params["deep_prompt"][s]
  batch = make_batch()
  logits = model.logits(params, batch)
  assert logits.shape == (3, 6, CONFIG.vocab_size)
  assert np.all(np.isfinite(logits))
  grads = prompt_grads(model, params, batch)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.abs(g) > 0), jax.tree_util.keystr(path)
  # Only `deep_prompt` is added to the base model's tree.
  base = EncoderDecoderModel(Transformer(CONFIG)).param_shapes(10, 6)
  _, rest = split(params)
  assert (jax.tree_util.tree_structure(rest) ==
          jax.tree_util.tree_structure(base))


@pytest.mark.slow
def test_zero_length_prefix_is_the_base_model_exactly():
  base = EncoderDecoderModel(Transformer(CONFIG))
  base_params = nn.unbox(base.init(jax.random.PRNGKey(0), 10, 6))["params"]
  batch = make_batch()
  expected = base.logits(base_params, batch)
  for reparameterize in (False, True):
    model, _, params = make(prefix_length=0, decoder_prompt=True,
                            reparameterize=reparameterize)
    params = {**base_params, "deep_prompt": params["deep_prompt"]}
    np.testing.assert_array_equal(model.logits(params, batch), expected)


def test_prefix_changes_outputs_but_not_encoder_positions_or_padding():
  model, _, params = make()
  batch = make_batch()
  module = model.module
  encoded, mask = module.apply({"params": params},
                               batch["encoder_input_tokens"], method="encode")
  assert encoded.shape == (3, 10, CONFIG.emb_dim)  # No extra positions.
  np.testing.assert_array_equal(mask, batch["encoder_input_tokens"] > 0)
  # Changing only the prefix values changes every real position.
  bumped = jax.tree_util.tree_map(lambda x: x, params)
  bumped["deep_prompt"]["encoder"]["prefix"] = (
      params["deep_prompt"]["encoder"]["prefix"].at[:, 1].multiply(3.0))
  encoded2, _ = module.apply({"params": bumped},
                             batch["encoder_input_tokens"], method="encode")
  diff = np.abs(np.asarray(encoded2 - encoded)).max(-1)
  assert np.all(diff[np.asarray(mask) > 0] > 1e-4)
  # Padding keys stay masked: dropping row 1's 3 padded inputs changes
  # nothing at its real positions.
  logits = model.logits(params, batch)
  short = {k: v[1:2] for k, v in batch.items()}
  short["encoder_input_tokens"] = short["encoder_input_tokens"][:, :-3]
  np.testing.assert_allclose(model.logits(params, short)[0], logits[1],
                             atol=1e-5)


def test_cached_decoding_with_decoder_prefixes_matches_teacher_forcing():
  model, _, params = make(decoder_prompt=True, reparameterize=True)
  batch = make_batch(targets=7)
  tokens, scores = jax.jit(model.predict_batch)(params, batch)
  # Re-score teacher-forced with no target padding (a random model may emit
  # id 0 mid-sequence): sum log-probabilities up to and including EOS.
  dec_in = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), tokens[:, :-1]], 1)
  logits = model.logits(params, {
      "encoder_input_tokens": batch["encoder_input_tokens"],
      "decoder_input_tokens": dec_in,
      "decoder_target_tokens": jnp.ones_like(tokens)})
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None],
                             -1)[..., 0]
  eos_before = jnp.cumsum(tokens == 1, axis=1) - (tokens == 1)
  np.testing.assert_allclose(jnp.sum(logp * (eos_before == 0), 1), scores,
                             atol=1e-4)
  np.testing.assert_array_equal(
      jnp.where(eos_before == 0, jnp.argmax(logits, -1), tokens), tokens)


def test_prefix_dropout_only_in_training():
  model, _, params = make(prefix_dropout_rate=0.5)
  batch = make_batch()
  a = model.logits(params, batch)
  np.testing.assert_array_equal(a, model.logits(params, batch))
  b = model.logits(params, batch, dropout_rng=jax.random.PRNGKey(3))
  assert not np.allclose(a, b)


def test_materialize_reparameterised_prompt():
  model, _, params = make(reparameterize=True, decoder_prompt=True)
  batch = make_batch()
  direct_params = deep.materialize(model.module, params)
  direct = EncoderDecoderModel(model.module.clone(reparameterize=False))
  assert direct_params["deep_prompt"]["encoder"]["prefix"].shape == (
      CONFIG.num_encoder_layers, 2, 4, CONFIG.num_heads * CONFIG.head_dim)
  np.testing.assert_allclose(direct.logits(direct_params, batch),
                             model.logits(params, batch), atol=1e-5)
  # A run's reparameterised prompt starting a direct one (deep_init.from_run)
  # computes the same prefixes from the checkpoint's arrays.
  flat = param_tree.flatten_params(params)
  for stack in ("encoder", "decoder"):
    expected = direct_params["deep_prompt"][stack]["prefix"]
    np.testing.assert_allclose(
        deep_init._materialize(flat, stack, expected.shape),  # pylint: disable=protected-access
        expected, atol=1e-5)


# ------------------------------------------------------------ classification


def test_mean_pool_ignores_padding():
  x = jnp.arange(12, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.array([[1, 1, 0], [0, 0, 0]])
  np.testing.assert_allclose(classification.mean_pool(x, mask),
                             [[1.0, 2.0], [0.0, 0.0]])


@pytest.mark.slow
def test_classification_head_forward_loss_and_gradient():
  model, boxed, params = make(num_classes=3)
  partitioning.check_logical_axes(boxed)
  assert boxed["classifier"]["dense"]["kernel"].names == ("embed", "classes")
  module = model.module
  batch = make_batch()
  logits = module.apply({"params": params}, batch["encoder_input_tokens"],
                        method="classify")
  assert logits.shape == (3, 3) and logits.dtype == jnp.float32
  classifier = EncoderDecoderModel(module, objective="classification")
  loss, metrics = classifier.loss_fn(params, batch)
  expected = -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(3),
                                                 batch["label"]])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  preds = classifier.classify_batch(params, batch)
  np.testing.assert_array_equal(preds, jnp.argmax(logits, -1))
  assert metrics["accuracy_correct"] == jnp.sum(preds == batch["label"])
  assert metrics["num_tokens"] == 3  # One prediction per example.

  trainable = {k: params[k] for k in ("deep_prompt", "classifier")}
  frozen = {k: v for k, v in params.items() if k not in trainable}
  grads = jax.grad(lambda t: classifier.loss_fn({**frozen, **t}, batch)[0])(
      trainable)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.abs(g) > 0), jax.tree_util.keystr(path)


# --------------------------------------------------------------- gin, sizes


@pytest.mark.slow
def test_gin_config_builds_a_working_model():
  try:
    gin_utils.parse_gin(
        ["models/t5_1_1_tiny.gin", "prompts/deep_prompt.gin"],
        ["PREFIX_LENGTH = 3", "DEEP_PROMPT_REPARAM = True",
         "DEEP_PROMPT_HIDDEN_DIM = 5", "NUM_CLASSES = 2"])
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  finally:
    gin.clear_config()
  module = model.module
  assert isinstance(module, deep.DeepPromptTransformer)
  assert (module.prefix_length, module.reparameterize,
          module.reparam_hidden_dim, module.num_classes) == (3, True, 5, 2)
  assert module.config.emb_dim == 4 and module.config.mlp_activations == (
      "gelu", "linear")
  params = nn.unbox(model.init(jax.random.PRNGKey(0), 5, 3))["params"]
  assert params["deep_prompt"]["encoder"]["embedding"].shape == (3, 4)
  assert params["deep_prompt"]["encoder"]["output"]["dense"][
      "kernel"].shape == (5, 2 * 2 * 2 * 2)
  batch = {"encoder_input_tokens": jnp.array([[5, 6, 7, 1, 0]]),
           "decoder_input_tokens": jnp.array([[0, 8, 9]]),
           "decoder_target_tokens": jnp.array([[8, 9, 1]])}
  loss, _ = model.loss_fn(params, batch)
  assert np.isfinite(loss)


SIZES = {  # T5 1.1 (layers, heads, head_dim, emb_dim), as configs/models.
    "small": (8, 6, 64, 512),
    "base": (12, 12, 64, 768),
    "xxl": (24, 64, 64, 4096),
}


def deep_prompt_param_count(size: str, prefix_length: int,
                            reparameterize: bool, decoder_prompt: bool,
                            hidden_dim: int = 512) -> int:
  layers_, heads, head_dim, emb = SIZES[size]
  config = T5Config(emb_dim=emb, num_heads=heads, head_dim=head_dim,
                    num_encoder_layers=layers_, num_decoder_layers=layers_)
  prompt = deep.DeepPrompt(config, prefix_length, decoder_prompt,
                           reparameterize, hidden_dim)
  shapes = jax.eval_shape(
      lambda: prompt.init(jax.random.PRNGKey(0),
                          method=lambda m: (m.encoder_prefixes(),
                                            m.decoder_prefixes())))
  return sum(int(np.prod(x.shape))
             for x in jax.tree_util.tree_leaves(nn.unbox(shapes)))


@pytest.mark.parametrize("size", list(SIZES))
def test_deep_prompt_parameter_counts(size):
  layers_, heads, head_dim, emb = SIZES[size]
  p, hd, hidden = 100, heads * head_dim, 512
  counts = {}
  for reparam in (False, True):
    for dec in (False, True):
      counts[(reparam, dec)] = n = deep_prompt_param_count(size, p, reparam,
                                                           dec)
      stacks = 2 if dec else 1
      if reparam:
        per = p * emb + emb * hidden + hidden + (hidden + 1) * layers_ * 2 * hd
      else:
        per = layers_ * 2 * p * hd
      assert n == stacks * per
  print(f"\nT5 1.1 {size}, prefix 100: direct enc {counts[(False, False)]:,}"
        f" / enc+dec {counts[(False, True)]:,}; reparam(H=512) enc "
        f"{counts[(True, False)]:,} / enc+dec {counts[(True, True)]:,}")
