"""The cheapest memory settings under which a training step fits a device.

`suggest(plan_of, flops_of, ...)` tries every combination of the trainer's
memory levers (`memory.Levers`: REMAT_POLICY, NUM_MICROBATCHES,
ACTIVATION_DTYPE, FROZEN_DTYPE) and ranks the ones that fit by their cost:

  1. the FLOPs rematerialisation recomputes (`activations.step_flops`);
  2. then fewer microbatches (each is a sequential pass over a smaller
     batch: less parallel work per device);
  3. then fewer bfloat16 settings (float32 is the original's numerics).

Nothing is loaded: `plan_of(levers)` returns a `memory.MemoryPlan` from
shapes alone.
"""

import dataclasses
from typing import Callable, Sequence

from prompt_tuning.partitioning import activations
from prompt_tuning.partitioning import memory
from prompt_tuning.training import run_settings

# Activation dtypes a suggestion tries (ACTIVATION_DTYPE), original first.
ACTIVATION_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Suggestion:
  """One fitting setting: its levers, plan and cost.

  Attributes:
    levers: the settings.
    plan: its memory plan.
    step_flops: matrix-product FLOPs of one step per device, recompute
      included.
    recompute_flops: of which rematerialisation recomputes.
  """
  levers: memory.Levers
  plan: memory.MemoryPlan
  step_flops: int
  recompute_flops: int

  @property
  def recompute_share(self) -> float:
    """Recomputed FLOPs over the step's FLOPs without remat."""
    return self.recompute_flops / (self.step_flops - self.recompute_flops)

  def cost_key(self) -> tuple[int, int, int]:
    return (self.recompute_flops, self.levers.num_microbatches,
            len(self.levers.narrow_dtypes()))


def microbatch_choices(batch_size: int, data_ways: int) -> list[int]:
  """NUM_MICROBATCHES the trainer takes here: divisors of the batch whose
  microbatches still split evenly over the `data` axis."""
  return [m for m in range(1, batch_size + 1)
          if batch_size % m == 0 and (batch_size // m) % data_ways == 0]


# What "fits" means in a suggestion, as the plan's output says it.
HEADROOM = (f"with {100 * activations.CALIBRATION_ERROR:.0f}% headroom on "
            "the activation estimate")


def suggest(plan_of: Callable[[memory.Levers], memory.MemoryPlan],
            flops_of: Callable[[str], tuple[int, int]], device_bytes: int,
            batch_size: int, data_ways: int,
            policies: Sequence[str] = tuple(activations.POLICY_KEEPS),
            ) -> list[Suggestion]:
  """Every fitting combination of levers, cheapest first: those whose plan
  fits with its activation estimate grown by `activations.
  CALIBRATION_ERROR`, the estimate's measured error.

  Args:
    plan_of: levers -> the step's `MemoryPlan`.
    flops_of: REMAT_POLICY -> `(step FLOPs, recomputed FLOPs)` per device
      (`activations.step_flops`).
    device_bytes: one device's memory.
    batch_size: global batch; data_ways: the mesh's `data` axis.
    policies: the REMAT_POLICYs to try.

  Returns:
    The fitting settings, sorted by `Suggestion.cost_key`; empty when none
    fits.
  """
  found = []
  for policy in policies:
    step, recompute = flops_of(policy)
    for m in microbatch_choices(batch_size, data_ways):
      for act in ACTIVATION_DTYPES:
        for frozen in run_settings.FROZEN_DTYPES:
          levers = memory.Levers(policy, m, act, frozen)
          plan = plan_of(levers)
          if plan.fits(device_bytes, activations.CALIBRATION_ERROR):
            found.append(Suggestion(levers, plan, step, recompute))
  return sorted(found, key=Suggestion.cost_key)


def best_per_policy(found: Sequence[Suggestion]) -> list[Suggestion]:
  """The cheapest fitting setting of each REMAT_POLICY, cheapest first."""
  best = {}
  for s in found:
    best.setdefault(s.levers.remat_policy, s)
  return sorted(best.values(), key=Suggestion.cost_key)


def format_suggestions(found: Sequence[Suggestion], device_bytes: int,
                       limit: int = 6) -> str:
  """A markdown table of the cheapest settings of each policy and the
  `--gin.` flags of the first."""
  if not found:
    return (f"No supported setting fits {memory.format_bytes(device_bytes)}"
            " per device; use more devices (a larger mesh), a smaller "
            "BATCH_SIZE or shorter TASK_FEATURE_LENGTHS.")
  lines = ["| REMAT_POLICY | NUM_MICROBATCHES | ACTIVATION_DTYPE | "
           "FROZEN_DTYPE | per device | recompute (step-time cost) |",
           "|---|---:|---|---|---:|---:|"]
  for s in best_per_policy(found)[:limit]:
    lv = s.levers
    cost = (f"+{100 * s.recompute_share:.0f}% FLOPs "
            f"({s.recompute_flops / 1e12:.2f} TFLOP/step)"
            if s.recompute_flops else "none")
    lines.append(f"| {lv.remat_policy} | {lv.num_microbatches} | "
                 f"{lv.activation_dtype} | {lv.frozen_dtype} | "
                 f"{memory.format_bytes(s.plan.per_device)} | {cost} |")
  lv = found[0].levers
  lines += ["", "Cheapest: " + " ".join([
      f"--gin.REMAT_POLICY=\"'{lv.remat_policy}'\"",
      f"--gin.NUM_MICROBATCHES={lv.num_microbatches}",
      f"--gin.ACTIVATION_DTYPE=\"'{lv.activation_dtype}'\"",
      f"--gin.FROZEN_DTYPE=\"'{lv.frozen_dtype}'\""])]
  return "\n".join(lines)
