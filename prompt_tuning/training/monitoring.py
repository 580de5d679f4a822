"""Watching a training run: the logging window and the divergence guard.

At every log step (every `log_period` steps) and before every checkpoint the
trainer takes the window's totals, lets the guard check them, then writes
them:

    totals = window.totals()          # None: no step since the last log
    if totals is not None:
      guard.check(totals, step, stop_note)
      window.write(step, totals, padding_share)

`LogWindow` sums the jitted step's metrics (on device, so a log costs one
transfer) and writes each window's values to TensorBoard and the progress
bar; `DivergenceGuard` raises on a NaN/Inf loss or parameter, an update far
larger than the parameters, or parameters grown far past their starting
norm. Neither needs a model (tests/test_monitoring.py).
"""

import math
import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from prompt_tuning.training import run_settings

# Step metrics whose window value is the maximum, not the sum.
MAX_METRICS = frozenset({"trainable_norm", "update_ratio"})


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or Inf loss."""


class DivergenceError(FloatingPointError):
  """The trainable parameters or their updates left the usual range."""


def accumulate(summed: Mapping[str, jax.Array],
               metrics: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Adds a step's scalar metrics to the window's (the maximum for
  `MAX_METRICS`); `summed` empty starts a window."""
  if not summed:
    return dict(metrics)
  return {k: (jnp.maximum if k in MAX_METRICS else jnp.add)(summed[k], v)
          for k, v in metrics.items()}


def write_scalars(writer: Any, step: int, scalars: Mapping[str, float]
                  ) -> None:
  """Writes `scalars` at `step` with a `clu.metric_writers` writer, flushed."""
  writer.write_scalars(step, dict(scalars))
  writer.flush()


class LogWindow:
  """The training metrics of the steps since the last log.

  Attributes:
    history: every written window, `(step, values)`.
  """

  def __init__(self, writer: Any, bar: Any,
               clock: Callable[[], float] = time.time):
    """`writer`: a `clu.metric_writers` writer; `bar`: a tqdm bar (its
    postfix shows the loss and speeds); `clock`: seconds, for the speeds."""
    self._writer, self._bar, self._clock = writer, bar, clock
    self.history: list[tuple[int, dict[str, float]]] = []
    self._restart()

  def _restart(self) -> None:
    self._summed: dict[str, jax.Array] = {}
    self._steps, self._tokens = 0, 0
    self._start = self._clock()

  def add(self, metrics: Mapping[str, jax.Array], num_tokens: int) -> None:
    """One step's metrics (`steps.train_step`'s scalars) and the token
    positions its batch fed (inputs plus targets, padding included)."""
    self._summed = accumulate(self._summed, metrics)
    self._steps += 1
    self._tokens += num_tokens

  def totals(self) -> Optional[dict[str, float]]:
    """The window's sums (maxima for `MAX_METRICS`) on the host; None when
    no step was added since the last `write`."""
    if not self._summed:
      return None
    return {k: float(v) for k, v in jax.device_get(self._summed).items()}

  def write(self, step: int, totals: Mapping[str, float],
            padding_share: float) -> dict[str, float]:
    """Writes the window ending at `step` (`totals` from `totals()`), then
    starts the next one.

    Returns:
      The logged values: per-step means of the loss, z-loss and gradient
      norm, per-token loss and accuracy, the largest trainable norm and
      update ratio, steps and tokens per second, and `padding_share`.
    """
    elapsed = max(self._clock() - self._start, 1e-9)
    tokens = max(totals["num_tokens"], 1.0)
    values = {
        "loss": totals["loss"] / self._steps,
        "loss_per_token": totals["loss"] / tokens,
        "z_loss": totals["z_loss"] / self._steps,
        "accuracy": totals["accuracy_correct"] / tokens,
        "grad_norm": totals["grad_norm"] / self._steps,
        "trainable_norm": totals["trainable_norm"],
        "update_ratio": totals["update_ratio"],
        "steps_per_second": self._steps / elapsed,
        "tokens_per_second": self._tokens / elapsed,
        "padding_share": padding_share,
    }
    self.history.append((step, values))
    write_scalars(self._writer, step, values)
    self._bar.set_postfix(loss=f"{values['loss']:.3f}",
                          steps_s=f"{values['steps_per_second']:.2f}",
                          tokens_s=f"{values['tokens_per_second']:.0f}")
    self._restart()
    return values


class DivergenceGuard:
  """Stops a run whose loss is not finite or whose training diverged."""

  def __init__(self, config: run_settings.DivergenceGuardConfig,
               reference_norm: float, reference_step: int):
    """`reference_norm`: the trainable parameters' norm at
    `reference_step`, the run's (or resumed run's) first step."""
    self.config = config
    self.reference_norm = reference_norm
    self.reference_step = reference_step

  def check(self, totals: Mapping[str, float], step: int,
            stop_note: str = "") -> None:
    """Raises if the window ending at `step` went wrong.

    Args:
      totals: a window's totals (`LogWindow.totals`): `loss`,
        `nonfinite_params`, `update_ratio`, `trainable_norm`.
      step: the window's last step.
      stop_note: ends the message's first sentence (e.g. '; the last good
        checkpoint is ...'); default '.'.

    Raises:
      NonFiniteLossError: the loss or a trainable value is NaN/Inf.
      DivergenceError: an update or the parameters' norm is beyond the
        configured limits.
    """
    stop_note = stop_note or "."
    if not math.isfinite(totals["loss"]) or totals["nonfinite_params"]:
      raise NonFiniteLossError(
          f"Loss became {totals['loss']} (and "
          f"{totals['nonfinite_params']:.0f} trainable values NaN/Inf) by "
          f"step {step}{stop_note} Lower LEARNING_RATE or check the data.")
    limit = self.config.max_update_ratio
    if limit is not None and totals["update_ratio"] > limit:
      raise DivergenceError(
          f"Training diverged by step {step}: an update was "
          f"{totals['update_ratio']:.3g} times the norm of the trainable "
          f"parameters (limit max_update_ratio={limit:g}){stop_note} "
          "Lower LEARNING_RATE, or raise/disable the guard with "
          "--gin.DivergenceGuardConfig.max_update_ratio=None.")
    growth, norm = self.config.max_norm_growth, self.reference_norm
    if (growth is not None and norm > 0 and
        totals["trainable_norm"] > growth * norm):
      raise DivergenceError(
          f"Training diverged by step {step}: the trainable parameters' norm "
          f"is {totals['trainable_norm']:.3g}, "
          f"{totals['trainable_norm'] / norm:.3g} times its value "
          f"{norm:.3g} at step {self.reference_step} (limit "
          f"max_norm_growth={growth:g}){stop_note} Lower LEARNING_RATE, or "
          "raise/disable the guard with "
          "--gin.DivergenceGuardConfig.max_norm_growth=None.")
