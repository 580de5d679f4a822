"""T5X's Adafactor state in a checkpoint (`optimizer/state`): the layout.

T5X's standard restore (its finetune.gin, `RestoreCheckpointConfig` in
'specific' mode) restores the whole optimizer, so a checkpoint without
`optimizer/state/param_states` is refused ("target dict contains keys
{'param_states'} which are not present"). The layout, as T5X's
`adafactor.Adafactor` writes it (the T5X-written fixture
`shared/fixtures/t5x_t5_1_1_tiny/checkpoint_3` holds exactly this):

  optimizer/state/step                       int32 scalar
  optimizer/state/param_states/<param>/m     float32
  optimizer/state/param_states/<param>/v     float32
  optimizer/state/param_states/<param>/v_col float32
  optimizer/state/param_states/<param>/v_row float32

for every parameter of `optimizer/target`, trainable or not. A parameter of
rank >= 2 whose second-largest dimension is at least
`MIN_DIM_SIZE_TO_FACTOR` is factored: with `largest` / `second` the indices
of its largest and second-largest dimensions (ties: the later index is
`largest`), `v_row` is its shape without `largest`, `v_col` its shape
without `second`, and `v` is a placeholder. Others keep `v` (the parameter's
shape) with `v_row`, `v_col` placeholders. `m` is a placeholder without
momentum (T5X's default, and the paper's), else the parameter's shape.
Placeholders are float32 zeros of shape [1]. T5X falls back to this rule
for parameters of rank <= 2 even when it is given logical factor rules, so
it holds for every T5 parameter; optax's `adafactor` (ours) factors the same
way, so its slots map one to one.

T5X writes these slots inline in the msgpack file (the fixture's are all
inline, its `v` of the [32128, 4] embedding included).
"""

from typing import Any, Mapping, Sequence

import numpy as np

SLOTS = ("m", "v", "v_col", "v_row")  # The msgpack map's (sorted) order.
MIN_DIM_SIZE_TO_FACTOR = 128  # T5X's and optax's default.
PLACEHOLDER_SHAPE = (1,)
STEP_DTYPE = np.int32
SLOT_DTYPE = np.float32


def factored_dims(shape: Sequence[int],
                  min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR
                  ) -> tuple[int, int] | None:
  """(second-largest, largest) dimension index, or None when unfactored."""
  if len(shape) < 2:
    return None
  order = np.argsort(np.asarray(shape), kind="stable")
  second, largest = int(order[-2]), int(order[-1])
  if shape[second] < min_dim_size_to_factor:
    return None
  return second, largest


def slot_shapes(shape: Sequence[int], momentum: bool = False
                ) -> dict[str, tuple[int, ...]]:
  """T5X's shapes of a parameter's slots {m, v, v_col, v_row}.

  Args:
    shape: the parameter's shape.
    momentum: whether Adafactor keeps a first moment (`m` full size).
  """
  shape = tuple(int(d) for d in shape)
  shapes = dict.fromkeys(SLOTS, PLACEHOLDER_SHAPE)
  dims = factored_dims(shape)
  if dims is None:
    shapes["v"] = shape
  else:
    second, largest = dims
    shapes["v_row"] = tuple(d for i, d in enumerate(shape) if i != largest)
    shapes["v_col"] = tuple(d for i, d in enumerate(shape) if i != second)
  if momentum:
    shapes["m"] = shape
  return shapes


def fresh_param_state(shape: Sequence[int], momentum: bool = False
                      ) -> dict[str, np.ndarray]:
  """The zeros T5X's Adafactor starts a parameter's slots with."""
  return {slot: np.zeros(s, SLOT_DTYPE)
          for slot, s in slot_shapes(shape, momentum).items()}


def param_state(shape: Sequence[int],
                slots: Mapping[str, Any] | None = None
                ) -> dict[str, np.ndarray]:
  """One parameter's T5X slots: `slots` where they fit T5X's layout.

  Args:
    shape: the parameter's shape.
    slots: our optimizer's {v_row, v_col, v[, m]} for it (host arrays), or
      None (a frozen parameter, or no optimizer state at hand).

  Returns:
    {m, v, v_col, v_row} float32. Slots of another layout (e.g. an optimizer
    run with another `min_dim_size_to_factor`) are replaced by zeros, as T5X
    itself would start them; so is a parameter without `slots`.
  """
  momentum = slots is not None and slots.get("m") is not None and (
      tuple(np.shape(slots["m"])) == tuple(shape))
  fresh = fresh_param_state(shape, momentum)
  if slots is None:
    return fresh
  given = {slot: np.asarray(slots[slot], SLOT_DTYPE)
           for slot in SLOTS if slots.get(slot) is not None}
  if any(given.get(slot, fresh[slot]).shape != fresh[slot].shape
         for slot in SLOTS):
    return fresh
  return {slot: given.get(slot, fresh[slot]) for slot in SLOTS}
