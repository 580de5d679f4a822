"""Optimizers: Adafactor as the paper trains prompts, via optax.

The paper (and T5X's prompt-tuning configs) use Adafactor with a constant
learning rate of 0.3, second-moment decay exponent 0.8, weight decay 1e-5,
no momentum, no parameter-scale multiplication and update clipping at 1.0.
T5's pretraining (runs/pretrain.gin) instead scales updates by the
parameters' scale and follows `rsqrt_schedule`.
"""

import numbers
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from prompt_tuning import errors
from prompt_tuning import paper_defaults
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import t5x_adafactor


def adafactor(learning_rate: float = paper_defaults.LEARNING_RATE,
              decay_rate: float = 0.8,
              weight_decay_rate: Optional[float] = 1e-5,
              clipping_threshold: Optional[float] = 1.0,
              multiply_by_parameter_scale: bool = False,
              momentum: Optional[float] = None,
              min_dim_size_to_factor: int = t5x_adafactor.MIN_DIM_SIZE_TO_FACTOR
              ) -> optax.GradientTransformation:
  """Adafactor with the paper's defaults (see module docstring).

  The second-moment decay at step t is `1 - (t + 1) ** -decay_rate`, so the
  step counter in the optimizer state matters: see `set_optimizer_step`.

  Raises:
    errors.ConfigError: for a learning rate that is neither a positive
      number nor a schedule (a callable of the step).
  """
  if not callable(learning_rate) and (
      isinstance(learning_rate, bool) or
      not isinstance(learning_rate, numbers.Real) or not learning_rate > 0):
    raise errors.ConfigError(
        f"LEARNING_RATE must be a positive number or an optax schedule, got "
        f"{learning_rate!r}; e.g. --gin.LEARNING_RATE=0.3.")
  return optax.adafactor(
      learning_rate=learning_rate,
      decay_rate=decay_rate,
      clipping_threshold=clipping_threshold,
      multiply_by_parameter_scale=multiply_by_parameter_scale,
      momentum=momentum,
      weight_decay_rate=weight_decay_rate,
      min_dim_size_to_factor=min_dim_size_to_factor)


def rsqrt_schedule(base_learning_rate: float = 1.0,
                   warmup_steps: int = 10000) -> optax.Schedule:
  """T5's pretraining schedule: `base / sqrt(max(step, warmup_steps))`.

  Constant `base / sqrt(warmup_steps)` (0.01 with the defaults) for the
  first `warmup_steps` steps, then inverse square-root decay. The step is
  the optimizer's counter, so a run whose counter is restored from a
  checkpoint (OPTIMIZER_STEP = 'restored') continues the decay.

  Raises:
    errors.ConfigError: `base_learning_rate` not a positive number, or
      `warmup_steps` not an integer >= 1.
  """
  if (isinstance(base_learning_rate, bool) or
      not isinstance(base_learning_rate, numbers.Real) or
      not base_learning_rate > 0):
    raise errors.ConfigError(
        f"rsqrt_schedule's base_learning_rate must be a positive number, got "
        f"{base_learning_rate!r}; e.g. --gin.optimizers.pretraining_adafactor."
        "base_learning_rate=1.0.")
  if (isinstance(warmup_steps, bool) or
      not isinstance(warmup_steps, numbers.Integral) or warmup_steps < 1):
    raise errors.ConfigError(
        f"rsqrt_schedule's warmup_steps (WARMUP_STEPS) must be an integer >= "
        f"1, got {warmup_steps!r}; e.g. --gin.WARMUP_STEPS=10000.")
  base, warmup = float(base_learning_rate), int(warmup_steps)

  def schedule(count: jax.Array) -> jax.Array:
    step = jnp.maximum(jnp.asarray(count, jnp.float32), float(warmup))
    return base * jax.lax.rsqrt(step)

  return schedule


def pretraining_adafactor(base_learning_rate: float = 1.0,
                          warmup_steps: int = 10000
                          ) -> optax.GradientTransformation:
  """Adafactor as T5 pretrains: updates scaled by each parameter's RMS,
  decay rate 0.8, update clipping 1.0, no momentum, no weight decay, and
  `rsqrt_schedule(base_learning_rate, warmup_steps)` as the learning rate
  (runs/pretrain.gin, runs/lm_adapt.gin, `prompt_tuning.recipes`)."""
  return adafactor(
      learning_rate=rsqrt_schedule(base_learning_rate, warmup_steps),
      decay_rate=0.8, weight_decay_rate=None, clipping_threshold=1.0,
      multiply_by_parameter_scale=True, momentum=None)


def set_optimizer_step(opt_state: Any, step: int) -> Any:
  """Sets every step counter (`count`) in an optax state to `step`.

  The original prompt-tuning runs restore Adafactor's step from the
  pretrained T5X checkpoint (about 1.1M for T5 1.1 LM-adapted), which makes
  the new prompt's second-moment decay `1 - 1.1e6 ** -0.8`, i.e. a very long
  average; starting at 0 adapts quickly instead.
  """

  def reset(path, leaf):
    if path and getattr(path[-1], "name", None) == "count":
      return jnp.full_like(leaf, step)
    return leaf
  return jax.tree_util.tree_map_with_path(reset, opt_state)


def optimizer_step(opt_state: Any) -> Optional[int]:
  """The first step counter found in `opt_state`, or None."""
  found = []

  def visit(path, leaf):
    if path and getattr(path[-1], "name", None) == "count":
      found.append(int(leaf))
  jax.tree_util.tree_map_with_path(visit, opt_state)
  return found[0] if found else None


def _states_of(node: Any, kind: type) -> list[Any]:
  """Every `kind` (an optax state NamedTuple) inside an optax state."""
  if isinstance(node, kind):
    return [node]
  if isinstance(node, Mapping):
    children = list(node.values())
  elif isinstance(node, (tuple, list)):
    children = list(node)
  else:
    return []
  return [found for child in children for found in _states_of(child, kind)]


def adafactor_slots(opt_state: Any) -> dict[str, dict[str, Any]]:
  """Adafactor's per-parameter slots in an optax state, by parameter name.

  Args:
    opt_state: `optax.adafactor`'s state (possibly inside other optax
      wrappers), of the trainable parameters.

  Returns:
    {'/'-joined parameter name: {v_row, v_col, v[, m]}} (arrays as they are
    in the state; `m`, the momentum, only when Adafactor keeps one); empty
    when the state holds no Adafactor. `t5x_adafactor` lays them out as
    T5X's `param_states`.
  """
  factored = _states_of(opt_state, optax.FactoredState)
  if not factored:
    return {}
  slots: dict[str, dict[str, Any]] = {}
  for slot in ("v_row", "v_col", "v"):
    for name, value in param_tree.flatten_params(
        getattr(factored[0], slot)).items():
      slots.setdefault(name, {})[slot] = value
  for ema in _states_of(opt_state, optax.EmaState)[:1]:
    for name, value in param_tree.flatten_params(ema.ema).items():
      slots.setdefault(name, {})["m"] = value
  return slots

