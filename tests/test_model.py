"""Invariants of the T5 model, its decoding and scoring (tiny random models)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import random_batch, tiny_config
from prompt_tuning.models import GATED_GELU, RELU, T5Config, Transformer
from prompt_tuning.models import decoding, layers
from prompt_tuning.models.model import EncoderDecoderModel


def make_model(config: T5Config, seed: int = 0):
  model = EncoderDecoderModel(Transformer(config))
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), 10, 6))["params"]
  return model, params


def test_relative_position_buckets_follow_t5_bucketing():
  # Bidirectional, 32 buckets, max distance 128 (T5's defaults): 16 buckets
  # per direction, exact for |d| < 8, log-spaced up to 128.
  b = layers.relative_position_buckets(1, 300, True, 32, 128)[0]
  assert [int(b[d]) for d in range(8)] == [0] + list(range(17, 24))  # after.
  assert int(b[8]) == 24 and int(b[15]) == 25 and int(b[16]) == 26
  assert int(b[127]) == 31 and int(b[299]) == 31
  q = layers.relative_position_buckets(300, 1, True, 32, 128)[:, 0]
  assert [int(q[d]) for d in range(8)] == list(range(8))  # keys before.
  assert int(q[299]) == 15
  causal = layers.relative_position_buckets(5, 5, False, 32, 128)
  assert np.all(causal[np.triu_indices(5, 1)] == 0)  # future -> bucket 0.
  assert [int(causal[4, j]) for j in range(5)] == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("activations,tied", [(RELU, True), (GATED_GELU, False)])
def test_encoder_takes_embedded_inputs_and_mask(activations, tied):
  config = tiny_config(mlp_activations=activations, logits_via_embedding=tied)
  model, params = make_model(config)
  batch = random_batch(config.vocab_size)
  encoded, mask = model.module.apply({"params": params},
                                     batch["encoder_input_tokens"],
                                     method="encode")
  embedded = params["token_embedder"]["embedding"][
      batch["encoder_input_tokens"]]
  direct = model.module.apply(
      {"params": params}, embedded,
      (batch["encoder_input_tokens"] > 0).astype(jnp.float32),
      method=lambda m, x, k: m.encoder(x, k))
  np.testing.assert_allclose(encoded, direct, atol=1e-6)
  np.testing.assert_array_equal(mask, batch["encoder_input_tokens"] > 0)


def test_padding_does_not_change_real_positions():
  config = tiny_config()
  model, params = make_model(config)
  batch = random_batch(config.vocab_size)
  logits = model.logits(params, batch)
  # Row 1 has 3 padded inputs: dropping them must not change its logits.
  short = {k: v[1:2] for k, v in batch.items()}
  short["encoder_input_tokens"] = short["encoder_input_tokens"][:, :-3]
  np.testing.assert_allclose(model.logits(params, short)[0], logits[1],
                             atol=1e-5)


def test_bfloat16_activations_track_float32():
  config = tiny_config()
  model, params = make_model(config)
  batch = random_batch(config.vocab_size)
  model_bf16 = EncoderDecoderModel(Transformer(tiny_config(dtype="bfloat16")))
  logits32 = model.logits(params, batch)
  logits16 = model_bf16.logits(params, batch)
  assert logits16.dtype == jnp.float32  # Logits are returned in float32.
  np.testing.assert_allclose(logits16, logits32, atol=0.15)


def test_loss_is_negative_log_likelihood_without_z_loss():
  config = tiny_config()
  model, params = make_model(config)
  model = EncoderDecoderModel(model.module, z_loss=0.0)
  batch = random_batch(config.vocab_size)
  loss, metrics = model.loss_fn(params, batch)
  scores = model.score_batch(params, batch)
  np.testing.assert_allclose(loss, -jnp.sum(scores), rtol=1e-5)
  assert metrics["num_tokens"] == jnp.sum(batch["decoder_target_tokens"] > 0)
  with_z, _ = EncoderDecoderModel(model.module, z_loss=1e-4).loss_fn(
      params, batch)
  assert with_z > loss


def test_dropout_only_in_training():
  config = tiny_config(dropout_rate=0.3)
  model, params = make_model(config)
  batch = random_batch(config.vocab_size)
  a = model.logits(params, batch)
  np.testing.assert_array_equal(a, model.logits(params, batch))
  b = model.logits(params, batch, dropout_rng=jax.random.PRNGKey(3))
  assert not np.allclose(a, b)


def _dropout_calls(model, params, batch, seed=3):
  """(input, output) of every `nn.Dropout` call in one training forward."""
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if (isinstance(context.module, nn.Dropout) and
        context.method_name == "__call__"):
      calls.append((context.module.scope.path, np.asarray(args[0]),
                    np.asarray(out)))
    return out

  with nn.intercept_methods(record):
    model.logits(params, batch, dropout_rng=jax.random.PRNGKey(seed))
  return calls


def test_every_dropout_mask_is_shared_over_the_length_axis():
  # T5X/Flaxformer drop whole channels: `[b, l, e]` activations share one
  # mask over l; attention weights `[b, h, q, k]` one mask over q.
  config = tiny_config(dropout_rate=0.5, mlp_activations=GATED_GELU)
  model, params = make_model(config)
  calls = _dropout_calls(model, params, random_batch(config.vocab_size))
  # Encoder: input, 2 x (attention weights, attention out, MLP hidden, MLP
  # out), final output; decoder: input, 2 x (2 attentions x 2, MLP x 2),
  # final output.
  assert len(calls) == (1 + 2 * 4 + 1) + (1 + 2 * 6 + 1)
  sites = {"/".join(path) for path, _, _ in calls}
  assert any("attention" in s for s in sites), sites
  for path, x, y in calls:
    real = x != 0
    kept = (y != 0) & real
    dropped = (y == 0) & real
    assert dropped.any() and kept.any(), path
    # Within each column of axis -2, an element is either kept at every
    # position or dropped at every position.
    assert not np.any(kept.any(axis=-2) & dropped.any(axis=-2)), path
    np.testing.assert_allclose(y[kept], x[kept] / 0.5, rtol=1e-6)


def test_cached_decoding_matches_full_forward():
  config = tiny_config()
  model, params = make_model(config)
  batch = random_batch(config.vocab_size, targets=7)
  tokens, scores = jax.jit(model.predict_batch)(params, batch)
  assert tokens.shape == (3, 7)
  # Re-score the greedy output teacher-forced: every token is the argmax and
  # the summed log-probabilities agree.
  dec_in = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), tokens[:, :-1]], 1)
  forced = {"encoder_input_tokens": batch["encoder_input_tokens"],
            "decoder_input_tokens": dec_in, "decoder_target_tokens": tokens}
  logits = model.logits(params, {**forced,
                                 "decoder_target_tokens": jnp.ones_like(tokens)})
  real = tokens > 0
  np.testing.assert_array_equal(jnp.where(real, jnp.argmax(logits, -1), 0),
                                tokens)
  np.testing.assert_allclose(model.score_batch(params, forced), scores,
                             atol=1e-4)


def _scripted_logits(script):
  """A fake model that emits `script[step]` for every row (no real cache)."""
  script = jnp.asarray(script, jnp.float32)

  def tokens_to_logits(tokens, step):
    rows = tokens.shape[0]
    return jnp.broadcast_to(script[step], (rows,) + script.shape[1:]), step + 1
  return tokens_to_logits


def test_greedy_stops_at_eos_and_pads():
  # Vocabulary of 4; step 0 -> 3, step 1 -> EOS (1), later steps -> 2.
  big, small = 5.0, 0.0
  script = [[small, small, small, big], [small, big, small, small]] + \
      [[small, small, big, small]] * 3
  tokens, _ = decoding.greedy_search(_scripted_logits(script),
                                     jnp.array(0), 1, 5)
  np.testing.assert_array_equal(tokens, [[3, 1, 0, 0, 0]])


def test_beam_search_with_one_beam_is_greedy():
  config = tiny_config()
  model, params = make_model(config)
  batch = random_batch(config.vocab_size, targets=8)
  greedy, greedy_scores = model.predict_batch(params, batch)
  beam, beam_scores = model.predict_batch(params, batch, num_decodes=1)
  np.testing.assert_array_equal(greedy, beam)
  np.testing.assert_allclose(greedy_scores, beam_scores)


@pytest.mark.slow
def test_beam_search_finds_at_least_the_greedy_likelihood():
  config = tiny_config()
  model, params = make_model(config, seed=4)
  batch = random_batch(config.vocab_size, targets=8)
  _, greedy_scores = model.predict_batch(params, batch)
  beams, beam_scores = jax.jit(
      lambda p, b: model.predict_batch(p, b, num_decodes=4, alpha=0.0,
                                       return_all_decodes=True))(params, batch)
  assert beams.shape == (3, 4, 8)
  assert np.all(beam_scores[:, 0] >= greedy_scores - 1e-4)
  assert np.all(np.diff(beam_scores, axis=1) <= 1e-6)  # Best first.
  # Each returned beam's score is its true log-likelihood (alpha = 0).
  for k in range(4):
    seq = beams[:, k]
    dec_in = jnp.concatenate([jnp.zeros((3, 1), jnp.int32), seq[:, :-1]], 1)
    ll = model.score_batch(params, {
        "encoder_input_tokens": batch["encoder_input_tokens"],
        "decoder_input_tokens": dec_in, "decoder_target_tokens": seq})
    np.testing.assert_allclose(ll, beam_scores[:, k], atol=1e-3)


def test_beam_search_prefers_finished_over_longer_worse():
  # Vocabulary 3. From the start, EOS has p=0.6; token 2 leads to a
  # continuation whose total probability is lower. The best beam is [1].
  logp_first = jnp.log(jnp.array([1e-9, 0.6, 0.4]))
  logp_rest = jnp.log(jnp.array([1e-9, 0.5, 0.5]))
  script = [logp_first] + [logp_rest] * 3
  seqs, scores = decoding.beam_search(_scripted_logits(script), jnp.array(0),
                                      1, 2, 4, alpha=0.0)
  np.testing.assert_array_equal(seqs[0, 0], [1, 0, 0, 0])
  np.testing.assert_allclose(scores[0, 0], np.log(0.6), atol=1e-5)
  np.testing.assert_array_equal(seqs[0, 1], [2, 1, 0, 0])
  np.testing.assert_allclose(scores[0, 1], np.log(0.2), atol=1e-5)


def test_config_rejects_unknown_activation():
  with pytest.raises(ValueError, match="Unknown MLP activation 'swish'"):
    T5Config(mlp_activations=("swish",))


def _dot_operand_shapes(jaxpr, in_loop=False):
  """(inside a while loop?, operand shapes) of every dot_general."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append((in_loop, tuple(tuple(v.aval.shape) for v in eqn.invars)))
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", None)
      if inner is not None and hasattr(inner, "eqns"):
        found += _dot_operand_shapes(inner, in_loop or
                                     eqn.primitive.name == "while")
  return found


@pytest.mark.parametrize("num_decodes", [1, 3])
def test_cross_attention_keys_values_are_computed_once_per_decode(
    num_decodes):
  config = tiny_config()
  model, params = make_model(config)
  batch = random_batch(config.vocab_size, inputs=10, targets=5)
  jaxpr = jax.make_jaxpr(lambda p, b: model.predict_batch(
      p, b, num_decodes=num_decodes))(params, batch).jaxpr
  encoded = (3, 10, config.emb_dim)  # The encoder output, [b, l, e].
  projections = [(loop, shapes) for loop, shapes in _dot_operand_shapes(jaxpr)
                 if shapes[0] == encoded and
                 shapes[1] == (config.emb_dim,
                               config.num_heads * config.head_dim)]
  # The encoder's query/key/value projections, then the keys and values of
  # every decoder layer's cross-attention, once, before the decode loop (for
  # the 3 examples only: beams share their example's), never inside.
  assert len(projections) == (3 * config.num_encoder_layers +
                              2 * config.num_decoder_layers)
  assert not any(loop for loop, _ in projections)
  assert not any(loop and shapes[0][1] == 10 and shapes[0][-1] ==
                 config.emb_dim for loop, shapes in
                 _dot_operand_shapes(jaxpr))


def test_shared_keys_values_equal_repeated_ones():
  # Beams (rows i*r .. i*r+r-1) attending to their example's keys/values
  # give what repeating those keys/values per beam gives.
  attention = layers.MultiHeadDotProductAttention(num_heads=2, head_dim=4)
  rng = np.random.RandomState(0)
  query_in = jnp.asarray(rng.randn(6, 1, 8), jnp.float32)
  kv_in = jnp.asarray(rng.randn(2, 5, 8), jnp.float32)
  mask = np.ones((2, 1, 1, 5), np.float32)
  mask[1, ..., 3:] = 0
  params = attention.init(jax.random.PRNGKey(0), query_in,
                          jnp.repeat(kv_in, 3, 0))["params"]
  params = nn.unbox(params)
  key, value = layers.project_key_value(params, kv_in, 2, 4)
  shared = attention.apply({"params": params}, query_in, None,
                           jnp.repeat(mask, 3, 0), key_value=(key, value))
  repeated = attention.apply({"params": params}, query_in,
                             jnp.repeat(kv_in, 3, 0), jnp.repeat(mask, 3, 0))
  np.testing.assert_allclose(shared, repeated, rtol=1e-6, atol=1e-6)
