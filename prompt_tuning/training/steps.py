"""Pure training and evaluation steps over a `TrainState`.

These are module-level functions of (state, batch, ...) with the model and
optimizer passed as static arguments; `training.partitioned` jit-compiles
them once, with shardings. Gradients are taken with respect to the
trainable parameters only.
"""

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from prompt_tuning import errors
from prompt_tuning.prompts import freezing
from prompt_tuning.training.train_state import TrainState

Array = jax.Array
Batch = Mapping[str, Array]
LossFn = Callable[[Any, Batch, Optional[Array]], tuple[Array, dict[str, Array]]]

# How dropout's random bits are drawn: the implementation of the base
# dropout key, from which every step's and layer's key derives by
# `fold_in`. 'unsafe_rbg' (the default) draws the bits with XLA's
# RngBitGenerator and derives keys from them too: no threefry rounds, so a
# new batch shape compiles ~2x faster and a CPU step with dropout runs
# faster (benchmarks/README.md); the masks are other draws of the same
# distribution. 'rbg' draws with RngBitGenerator but derives keys with
# threefry. 'threefry2x32' is the original's raw `jax.random.PRNGKey` key:
# the masks T5X draws, bit for bit, for reference checks.
DROPOUT_RNG_IMPLS = ("unsafe_rbg", "rbg", "threefry2x32")
DEFAULT_DROPOUT_RNG_IMPL = "unsafe_rbg"


def run_keys(seed: int, dropout_rng_impl: str = DEFAULT_DROPOUT_RNG_IMPL
             ) -> tuple[Array, Array]:
  """A run's `(init_rng, dropout_rng)` from its seed.

  `init_rng` (the prompt's and any randomly initialised weight's) is
  always T5X's threefry key; `dropout_rng` uses `dropout_rng_impl` (one of
  DROPOUT_RNG_IMPLS), and with 'threefry2x32' is T5X's own.

  Raises:
    errors.ConfigError: for an unknown implementation (before anything is
      loaded).
  """
  if dropout_rng_impl not in DROPOUT_RNG_IMPLS:
    raise errors.ConfigError(
        f"Unknown dropout_rng_impl {dropout_rng_impl!r}; use one of "
        f"{DROPOUT_RNG_IMPLS} (e.g. --gin.trainer.train.dropout_rng_impl="
        "\"'threefry2x32'\" for T5X's masks).")
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  if dropout_rng_impl != "threefry2x32":
    dropout_rng = jax.random.key(seed, impl=dropout_rng_impl)
  return init_rng, dropout_rng


def _split_microbatches(batch: Batch, num_microbatches: int) -> Batch:
  """`[b, ...]` -> `[num_microbatches, b / num_microbatches, ...]`."""

  def split(x):
    if x.shape[0] % num_microbatches:
      raise ValueError(
          f"Batch size {x.shape[0]} is not divisible by num_microbatches="
          f"{num_microbatches}; choose a divisor of BATCH_SIZE.")
    return x.reshape((num_microbatches, x.shape[0] // num_microbatches) +
                     x.shape[1:])
  return jax.tree_util.tree_map(split, batch)


def trainable_gradients(loss_fn: LossFn, state: TrainState, batch: Batch,
               dropout_rng: Optional[Array], num_microbatches: int):
  """Summed gradients and metrics, optionally accumulated over microbatches.

  The loss is a sum over target tokens, so the sum of microbatch gradients
  is the full batch's gradient.
  """

  def grad_of(batch, rng):
    def loss_of_trainable(trainable):
      params = freezing.merge_params(trainable, state.frozen)
      return loss_fn(params, batch, rng)
    return jax.grad(loss_of_trainable, has_aux=True)(state.trainable)

  if num_microbatches <= 1:
    return grad_of(batch, dropout_rng)

  micro = _split_microbatches(batch, num_microbatches)

  def accumulate(carry, inputs):
    index, mb = inputs
    rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng,
                                                              index)
    grads, metrics = grad_of(mb, rng)
    return jax.tree_util.tree_map(jnp.add, carry, (grads, metrics)), None

  shapes = jax.eval_shape(lambda: grad_of(
      jax.tree_util.tree_map(lambda x: x[0], micro), dropout_rng))
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  (grads, metrics), _ = jax.lax.scan(
      accumulate, zeros, (jnp.arange(num_microbatches), micro))
  return grads, metrics


def train_step(state: TrainState, batch: Batch, dropout_rng: Optional[Array],
               *, loss_fn: LossFn, tx: optax.GradientTransformation,
               num_microbatches: int = 1) -> tuple[TrainState, dict[str, Array]]:
  """One optimizer step on the trainable parameters.

  Args:
    state: current state.
    batch: a full batch `[b, ...]`.
    dropout_rng: base dropout key, folded with the step number here so that
      a resumed run draws the same masks as an uninterrupted one; None
      disables dropout.
    loss_fn: `(params, batch, dropout_rng) -> (loss, metrics)`, e.g.
      `EncoderDecoderModel.loss_fn`.
    tx: optimizer whose state is `state.opt_state`.
    num_microbatches: gradient accumulation steps within the batch.

  Returns:
    (new state, metrics summed over the batch, plus `grad_norm`,
    `nonfinite_params` (the count of NaN/Inf trainable values after the
    update, so a run can stop before checkpointing a broken state),
    `trainable_norm` (after the update) and `update_ratio`
    (|update| / |trainable before it|), for the divergence guard).
  """
  rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng,
                                                            state.step)
  grads, metrics = trainable_gradients(loss_fn, state, batch, rng, num_microbatches)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  nonfinite = sum(jnp.sum(~jnp.isfinite(x)) for x in
                  jax.tree_util.tree_leaves(trainable))
  old_norm = optax.tree.norm(state.trainable)
  update_ratio = jnp.where(old_norm > 0, optax.tree.norm(updates) /
                           jnp.where(old_norm > 0, old_norm, 1.0), 0.0)
  metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                 nonfinite_params=nonfinite.astype(jnp.float32),
                 trainable_norm=optax.tree.norm(trainable),
                 update_ratio=update_ratio)
  new_state = state.replace(step=state.step + 1, trainable=trainable,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: Batch, *,
              loss_fn: LossFn) -> dict[str, Array]:
  """Teacher-forced loss metrics on a batch, without dropout."""
  _, metrics = loss_fn(state.params, batch, None)
  return metrics
