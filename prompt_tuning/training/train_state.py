"""The training state: trainable and frozen parameters kept apart.

Only the trainable half has optimizer state; the frozen half is carried
through steps untouched. A prompt-only checkpoint saves `step`, `trainable`
and `opt_state` (kilobytes for a prompt) and records the frozen base.
"""

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from prompt_tuning.prompts import freezing
from prompt_tuning.training import optimizers

Params = Any


@flax.struct.dataclass
class TrainState:
  """Attributes:
    step: int32 scalar, optimizer steps taken.
    trainable: parameters that receive gradients.
    frozen: parameters that never change.
    opt_state: optimizer state of `trainable` only.
  """
  step: jax.Array
  trainable: Params
  frozen: Params
  opt_state: Any

  @property
  def params(self) -> Params:
    """All parameters, merged back into the model's tree."""
    return freezing.merge_params(self.trainable, self.frozen)


def create_train_state(params: Params, split: freezing.ParamSplit,
                       tx: optax.GradientTransformation,
                       optimizer_step: int = 0,
                       frozen_dtype: Optional[str] = None) -> TrainState:
  """Splits `params` by `split` and initialises the optimizer.

  Args:
    params: the full parameter tree (unboxed).
    split: which parameters train (`freezing.compute_split`, checked once).
    tx: optimizer for the trainable half.
    optimizer_step: initial value of the optimizer's step counter (e.g. the
      pretrained checkpoint's step, as the original runs do; 0 otherwise).
    frozen_dtype: cast the frozen half's floating-point leaves to this
      dtype (`run_settings.PartitioningConfig.frozen_dtype`); None keeps
      theirs. The trainable half and its optimizer state are never cast.
  """
  trainable, frozen = split.split(params)
  if frozen_dtype is not None:
    frozen = jax.tree_util.tree_map(
        lambda x: x.astype(frozen_dtype)
        if jnp.issubdtype(x.dtype, jnp.floating) else x, frozen)
  opt_state = tx.init(trainable)
  if optimizer_step:
    opt_state = optimizers.set_optimizer_step(opt_state, optimizer_step)
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                    frozen=frozen, opt_state=opt_state)
