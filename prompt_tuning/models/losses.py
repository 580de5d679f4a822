"""Token-level losses for sequence-to-sequence training."""

import jax
import jax.numpy as jnp

Array = jax.Array


def cross_entropy_with_z_loss(logits: Array, targets: Array,
                              z_loss: float = 0.0) -> tuple[Array, Array]:
  """Per-token cross entropy plus T5X's z-loss.

  z-loss adds `z_loss * logsumexp(logits) ** 2`, keeping the softmax
  normaliser near 1 (T5X trains with 1e-4).

  Args:
    logits: `[b, t, v]`.
    targets: `[b, t]` int ids.
    z_loss: coefficient of the z-loss term.

  Returns:
    (total loss `[b, t]`, z-loss part `[b, t]`); mask padding yourself.
  """
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  z_term = z_loss * jnp.square(log_z)
  return log_z - target_logits + z_term, z_term


def sequence_log_likelihood(logits: Array, targets: Array) -> Array:
  """Sum over non-padding target tokens of log p(target): `[b]`."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token_ll = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(token_ll * (targets > 0), axis=-1)

