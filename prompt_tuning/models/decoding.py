"""Autoregressive decoding over a key/value cache: greedy and beam search.

Both searches are model-agnostic: they drive a `tokens_to_logits` callable

  tokens_to_logits(tokens [n, 1] int32, cache) -> (logits [n, v], new_cache)

where `cache` is any pytree whose non-scalar leaves have the flattened batch
`n` as leading axis (the `cache` collection of `MultiHeadDotProductAttention`
in decode mode). Both run inside `lax.while_loop`, so they jit once per
shape, and stop as soon as every sequence has finished: greedy once every
row has produced EOS, beam search once no live beam of any example can
still beat that example's k finished ones. `stop_early=False` runs all
`max_decode_length` steps instead, with the same outputs.

Sequences returned exclude the decoder start token, include the EOS token
where one was produced, and are padded with 0 afterwards.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

Array = jax.Array
Cache = Any
TokensToLogits = Callable[[Array, Cache], tuple[Array, Cache]]

# Stand-in for -inf that keeps arithmetic finite.
NEG_INF = -1.0e7


def greedy_search(tokens_to_logits: TokensToLogits,
                  cache: Cache,
                  batch_size: int,
                  max_decode_length: int,
                  eos_id: int = 1,
                  decoder_start_id: int = 0,
                  stop_early: bool = True) -> tuple[Array, Array]:
  """Greedy (argmax) decoding.

  Args:
    tokens_to_logits: see module docstring; `n == batch_size`.
    cache: initial decode cache for `batch_size` rows.
    batch_size: b.
    max_decode_length: L, steps to run at most.
    eos_id: end-of-sequence id; a row stops after producing it.
    decoder_start_id: first decoder input (0 for T5).
    stop_early: stop once every row has produced EOS (False: run L steps).

  Returns:
    sequences `[b, L]` int32 and their log-probabilities `[b]` (sum over the
    generated tokens, EOS included).
  """

  def cond(state):
    step, _, _, finished, _, _ = state
    if not stop_early:
      return step < max_decode_length
    return (step < max_decode_length) & ~jnp.all(finished)

  def body(state):
    step, sequences, log_probs, finished, cur_tokens, cache = state
    logits, cache = tokens_to_logits(cur_tokens[:, None], cache)
    step_log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    next_tokens = jnp.argmax(step_log_probs, axis=-1).astype(jnp.int32)
    token_log_probs = jnp.take_along_axis(step_log_probs, next_tokens[:, None],
                                          axis=-1)[:, 0]
    next_tokens = jnp.where(finished, 0, next_tokens)
    log_probs = log_probs + jnp.where(finished, 0.0, token_log_probs)
    sequences = jax.lax.dynamic_update_slice(sequences, next_tokens[:, None],
                                             (0, step))
    finished = finished | (next_tokens == eos_id)
    return step + 1, sequences, log_probs, finished, next_tokens, cache

  init = (jnp.array(0, jnp.int32),
          jnp.zeros((batch_size, max_decode_length), jnp.int32),
          jnp.zeros((batch_size,), jnp.float32),
          jnp.zeros((batch_size,), bool),
          jnp.full((batch_size,), decoder_start_id, jnp.int32),
          cache)
  _, sequences, log_probs, _, _, _ = jax.lax.while_loop(cond, body, init)
  return sequences, log_probs


def brevity_penalty(alpha: float, length: Array) -> Array:
  """GNMT length normalisation ((5 + length) / 6) ** alpha."""
  return jnp.power((5.0 + length) / 6.0, alpha)


def beam_search(tokens_to_logits: TokensToLogits,
                cache: Cache,
                batch_size: int,
                beam_size: int,
                max_decode_length: int,
                alpha: float = 0.6,
                eos_id: int = 1,
                decoder_start_id: int = 0,
                stop_early: bool = True) -> tuple[Array, Array]:
  """Beam search with GNMT brevity penalty.

  Args:
    tokens_to_logits: see module docstring; `n == batch_size * beam_size`,
      rows ordered batch-major (`[b0k0, b0k1, ..., b1k0, ...]`).
    cache: initial decode cache for `batch_size * beam_size` rows.
    batch_size: b.
    beam_size: k.
    max_decode_length: L.
    alpha: brevity-penalty exponent; 0 ranks by raw log-probability.
    eos_id: end-of-sequence id.
    decoder_start_id: first decoder input.
    stop_early: stop once no live beam can improve any example's finished
      ones (False: run L steps).

  Returns:
    sequences `[b, k, L]`, best first, and their scores `[b, k]`
    (log-probability divided by the brevity penalty of their length).
  """
  b, k, length = batch_size, beam_size, max_decode_length

  def gather(tree, beam_indices, old_beams):
    # Cache leaves are [b * old_beams, ...]; beam-major leaves [b, old, ...].
    def one(x):
      if x.ndim == 0:
        return x
      x = x.reshape((b, old_beams) + x.shape[1:])
      idx = beam_indices.reshape(beam_indices.shape + (1,) * (x.ndim - 2))
      y = jnp.take_along_axis(x, idx, axis=1)
      return y.reshape((b * beam_indices.shape[1],) + y.shape[2:])
    return jax.tree_util.tree_map(one, tree)

  def take(x, beam_indices):  # x: [b, beams, ...] -> [b, new, ...]
    idx = beam_indices.reshape(beam_indices.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)

  def cond(state):
    step, _, alive_log_probs, _, finished_scores, finished_flags, _ = state
    if not stop_early:
      return step < length
    # The best an alive beam can still reach: its log-probability now (it
    # only falls) over the largest brevity penalty of a length it can still
    # end at (the longest for alpha >= 0, the next one for alpha < 0).
    largest_penalty = jnp.maximum(
        brevity_penalty(alpha, length),
        brevity_penalty(alpha, (step + 1).astype(jnp.float32)))
    best_alive = alive_log_probs[:, 0] / largest_penalty
    worst_finished = jnp.min(
        jnp.where(finished_flags, finished_scores, NEG_INF), axis=1)
    all_done = jnp.all(finished_flags, axis=1) & (worst_finished > best_alive)
    return (step < length) & ~jnp.all(all_done)

  def body(state):
    (step, alive_seqs, alive_log_probs, finished_seqs, finished_scores,
     finished_flags, cache) = state
    cur_tokens = alive_seqs[:, :, step].reshape((b * k, 1))
    logits, cache = tokens_to_logits(cur_tokens, cache)
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    candidates = alive_log_probs[:, :, None] + log_probs.reshape((b, k, vocab))
    top_log_probs, top_indices = jax.lax.top_k(
        candidates.reshape((b, k * vocab)), 2 * k)
    top_beams = top_indices // vocab
    top_tokens = (top_indices % vocab).astype(jnp.int32)
    top_seqs = take(alive_seqs, top_beams)
    top_seqs = jax.lax.dynamic_update_slice(
        top_seqs, top_tokens[:, :, None], (0, 0, step + 1))
    ends = top_tokens == eos_id

    # Alive: the best k candidates that did not just end.
    alive_candidates = jnp.where(ends, NEG_INF, top_log_probs)
    new_alive_log_probs, alive_pick = jax.lax.top_k(alive_candidates, k)
    new_alive_seqs = take(top_seqs, alive_pick)
    cache = gather(cache, take(top_beams, alive_pick), k)

    # Finished: merge the ones that just ended with the earlier finished.
    penalty = brevity_penalty(alpha, (step + 1).astype(jnp.float32))
    new_scores = jnp.where(ends, top_log_probs / penalty, NEG_INF)
    all_seqs = jnp.concatenate([finished_seqs, top_seqs], axis=1)
    all_scores = jnp.concatenate([finished_scores, new_scores], axis=1)
    all_flags = jnp.concatenate([finished_flags, ends], axis=1)
    finished_scores, finished_pick = jax.lax.top_k(all_scores, k)
    finished_seqs = take(all_seqs, finished_pick)
    finished_flags = take(all_flags, finished_pick)
    return (step + 1, new_alive_seqs, new_alive_log_probs, finished_seqs,
            finished_scores, finished_flags, cache)

  seqs0 = jnp.zeros((b, k, length + 1), jnp.int32).at[:, :, 0].set(
      decoder_start_id)
  # Only the first beam is live at the start, so beams do not duplicate.
  alive_log_probs0 = jnp.tile(
      jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1))
  init = (jnp.array(0, jnp.int32), seqs0, alive_log_probs0, seqs0,
          jnp.full((b, k), NEG_INF, jnp.float32), jnp.zeros((b, k), bool),
          cache)
  (step, alive_seqs, alive_log_probs, finished_seqs, finished_scores,
   finished_flags, _) = jax.lax.while_loop(cond, body, init)

  # Rows where nothing finished fall back to their alive beams.
  alive_scores = alive_log_probs / brevity_penalty(
      alpha, step.astype(jnp.float32))
  any_finished = jnp.any(finished_flags, axis=1)
  seqs = jnp.where(any_finished[:, None, None], finished_seqs, alive_seqs)
  scores = jnp.where(any_finished[:, None], finished_scores, alive_scores)
  return seqs[:, :, 1:], scores
