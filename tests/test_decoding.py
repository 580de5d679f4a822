"""Greedy and beam search stop once every sequence has finished, with the
outputs of the full-length loop (`stop_early=False`); a debug callback in
the fake decoder counts the loop's steps."""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning.models import decoding

VOCAB = 11
MAX_LENGTH = 16


def _history_model(rows: int, seed: int, eos_ramp: float, eos_id: int = 1
                   ) -> tuple[decoding.TokensToLogits, Any, list[int]]:
  """A fake decoder whose next-token logits depend on every token so far.

  Its cache is `(step, state [rows, VOCAB])`: the state mixes in each
  emitted token, so beam search's reordering of the cache matters; EOS gets
  `eos_ramp` more logit at each step, so every sequence ends early. Token 0
  (padding) is never likely. Every call records its step in `steps`.

  Returns:
    (tokens_to_logits, initial cache, steps).
  """
  rng = np.random.RandomState(seed)
  table = jnp.asarray(rng.randn(VOCAB, VOCAB) * 2.0, jnp.float32)
  state0 = jnp.asarray(rng.randn(rows, VOCAB), jnp.float32)
  steps: list[int] = []

  def tokens_to_logits(tokens: jax.Array, cache: Any
                       ) -> tuple[jax.Array, Any]:  # [rows, 1] -> [rows, v]
    step, state = cache
    jax.debug.callback(lambda s: steps.append(int(s)), step)
    state = 0.5 * state + table[tokens[:, 0]]
    logits = state.at[:, eos_id].add(eos_ramp * step.astype(jnp.float32) - 4.0)
    logits = logits.at[:, 0].set(-1e4)
    return logits, (step + 1, state)

  return tokens_to_logits, (jnp.array(0, jnp.int32), state0), steps


def _run(search: Callable[..., Any], steps: list[int],
         **kwargs: Any) -> tuple[Any, int]:
  """`search(**kwargs)` as numpy, and how many steps its loop ran."""
  steps.clear()
  out = jax.tree_util.tree_map(np.asarray, search(**kwargs))
  jax.effects_barrier()
  ran = len(steps)
  assert steps == list(range(ran))
  return out, ran


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_stops_after_the_last_eos_with_full_length_outputs(seed):
  f, cache, steps = _history_model(4, seed, eos_ramp=1.5)
  args = dict(tokens_to_logits=f, cache=cache, batch_size=4,
              max_decode_length=MAX_LENGTH)
  (full_tokens, full_scores), full_steps = _run(
      decoding.greedy_search, steps, stop_early=False, **args)
  (tokens, scores), ran = _run(decoding.greedy_search, steps, **args)
  assert full_steps == MAX_LENGTH
  np.testing.assert_array_equal(tokens, full_tokens)
  np.testing.assert_array_equal(scores, full_scores)
  # Every row ended with EOS, then padding; the loop stopped right after
  # the last row's EOS.
  ends = [list(row).index(1) for row in tokens]
  assert ran == max(ends) + 1 < MAX_LENGTH
  for row, end in zip(tokens, ends):
    assert np.all(row[:end] > 1) and np.all(row[end + 1:] == 0)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0, -1.0])
@pytest.mark.parametrize("seed", [0, 10])
def test_beam_search_stops_when_no_beam_can_improve(seed, alpha):
  # alpha < 0 favours shorter outputs: with seed 0, a bound that assumed the
  # longest length is best stopped too early and returned other beams.
  batch, beams = 2, 3
  f, cache, steps = _history_model(batch * beams, seed, eos_ramp=1.0)
  args = dict(tokens_to_logits=f, cache=cache, batch_size=batch,
              beam_size=beams, max_decode_length=MAX_LENGTH, alpha=alpha)
  (full_seqs, full_scores), full_steps = _run(
      decoding.beam_search, steps, stop_early=False, **args)
  (seqs, scores), ran = _run(decoding.beam_search, steps, **args)
  assert full_steps == MAX_LENGTH
  assert ran < MAX_LENGTH
  np.testing.assert_array_equal(seqs, full_seqs)
  np.testing.assert_array_equal(scores, full_scores)
  assert np.all(np.any(seqs == 1, axis=-1))  # Every beam finished.
