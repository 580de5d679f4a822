"""Whether a training step can fit this machine, checked from shapes alone.

`check_step_fits(...)` plans the step's per-device memory with the memory
plan (`partitioning.memory.plan_memory`: parameter shapes, the mesh, the
batch, feature and prompt lengths; nothing loaded or allocated) and compares
it with what this machine has:

  * accelerators (GPU, TPU): each device's own memory, from
    `Device.memory_stats()['bytes_limit']`;
  * CPU devices: they all live in host RAM, so every device of this process
    together against the host's physical memory
    (`SC_PAGE_SIZE * SC_PHYS_PAGES`).

Where neither is known, nothing is checked. Only a step that cannot fit even
by the plan's most optimistic reading is refused: the activation estimate
less its calibrated error (`activations.CALIBRATION_ERROR`), no optimizer
state (preflight does not see the optimizer). A run that might fit is left
to try; e.g. `BATCH_SIZE=10**9` or `PROMPT_LENGTH=10**7` (hundreds of TiB)
is refused before any weight is read, naming the setting and the fix.
"""

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np

from prompt_tuning import errors
from prompt_tuning.partitioning import activations
from prompt_tuning.partitioning import memory
from prompt_tuning.partitioning.rules import DATA_AXIS, MESH_AXES


@dataclasses.dataclass(frozen=True)
class Capacity:
  """The memory a step's devices have.

  Attributes:
    bytes: what one device (accelerators) or all of this process's devices
      together (CPU: host RAM) can hold.
    devices: how many of the step's devices share `bytes` (1 on an
      accelerator; the process's CPU devices on the host).
    what: its description for messages.
  """
  bytes: int
  devices: int
  what: str


def host_memory_bytes() -> Optional[int]:
  """The host's physical memory, or None where the OS does not say."""
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (AttributeError, ValueError, OSError):
    return None


def device_memory_bytes(device: Any) -> Optional[int]:
  """An accelerator's memory (`memory_stats()['bytes_limit']`), or None
  (CPU devices and backends without memory statistics)."""
  try:
    stats = device.memory_stats()
  except (AttributeError, NotImplementedError, RuntimeError):
    return None
  limit = (stats or {}).get("bytes_limit")
  return int(limit) if limit else None


def capacity_of(mesh: jax.sharding.Mesh) -> Optional[Capacity]:
  """What the mesh's devices of this process can hold; None if unknown."""
  local = [d for d in mesh.devices.flat
           if d.process_index == jax.process_index()] or list(
               mesh.devices.flat)
  device = local[0]
  if device.platform != "cpu":
    limit = device_memory_bytes(device)
    if limit is None:
      return None
    return Capacity(limit, 1, f"each {device.platform.upper()} device's "
                    f"{memory.format_bytes(limit)}")
  host = host_memory_bytes()
  if host is None:
    return None
  return Capacity(host, len(local), f"the host's {memory.format_bytes(host)}"
                  f" of RAM, which this process's {len(local)} CPU "
                  "device(s) share")


def step_shape(model: Any, batch_size: int,
               lengths: Mapping[str, int]) -> activations.StepShape:
  """The training step's token shape: the batch, the feature lengths and
  the model's soft-prompt and deep-prompt prefix lengths."""
  module = model.module
  prefix = int(getattr(module, "prefix_length", 0) or 0)
  return activations.StepShape(
      batch_size, int(lengths["inputs"]), int(lengths["targets"]),
      prompt_length=int(getattr(module, "prompt_length", 0) or 0),
      prefix_length=prefix,
      decoder_prefix_length=prefix if getattr(module, "decoder_prompt",
                                              False) else 0)


def _optimistic(usage: Mapping[str, int]) -> int:
  """Per-device bytes with the activation estimate at the low end of its
  calibrated error."""
  act = usage.get("activations", 0)
  return sum(usage.values()) - int(activations.CALIBRATION_ERROR * act)


def check_step_fits(*, model: Any, mesh: jax.sharding.Mesh, batch_size: int,
                    lengths: Mapping[str, int], num_microbatches: int,
                    frozen_dtype: str, boxed_params: Optional[Any] = None,
                    trainable_patterns: Sequence[str] = (),
                    capacity: Optional[Capacity] = None) -> None:
  """Raises ConfigError if the training step cannot fit (module doc).

  Without `boxed_params` only the activations are planned: a check that
  needs no parameter shapes, for before they are built (building them
  for an absurd PROMPT_LENGTH would itself exhaust memory).

  Args:
    model: the `EncoderDecoderModel` (its config gives REMAT_POLICY,
      ACTIVATION_DTYPE and the sizes the activation estimate needs).
    mesh: the run's mesh.
    batch_size: BATCH_SIZE (the global batch).
    lengths: TASK_FEATURE_LENGTHS.
    num_microbatches: NUM_MICROBATCHES.
    frozen_dtype: FROZEN_DTYPE.
    boxed_params: its parameter shapes, `model.init_shapes(...)["params"]`;
      None: activations only.
    trainable_patterns: the regexes of the trainable parameters.
    capacity: the memory to compare with; default this machine's
      (`capacity_of`).
  """
  config = getattr(getattr(model, "module", None), "config", None)
  capacity = capacity or capacity_of(mesh)
  if capacity is None or config is None:
    return
  levers = memory.Levers(
      remat_policy=config.remat_policy, num_microbatches=num_microbatches,
      activation_dtype=np.dtype(config.dtype).name, frozen_dtype=frozen_dtype)
  dims = activations.ActivationDims.from_config(config)
  mesh_shape = {axis: int(mesh.shape[axis]) for axis in MESH_AXES}

  def usage(shape: activations.StepShape) -> dict[str, int]:
    """Per-device bytes by component (memory plan)."""
    if boxed_params is None:
      return {"activations": activations.activation_bytes(
          dims, shape, mesh_shape, levers.activation_dtype,
          levers.remat_policy, levers.num_microbatches)[0]}
    plan = memory.plan_memory(boxed_params, mesh_shape,
                              tuple(trainable_patterns), None, shape, dims,
                              levers)
    return {name: u.per_device for name, u in plan.usage.items()}

  def need(shape: activations.StepShape) -> int:
    return _optimistic(usage(shape)) * capacity.devices

  shape = step_shape(model, batch_size, lengths)
  needed = need(shape)
  if needed <= capacity.bytes:
    return
  culprits = _culprits(shape, mesh_shape, num_microbatches, need,
                       capacity.bytes)
  raise errors.ConfigError(_message(
      shape, usage(shape), needed, capacity, culprits, levers, mesh_shape))


def _culprits(shape: activations.StepShape, mesh_shape: Mapping[str, int],
              num_microbatches: int, need: Any, available: int
              ) -> list[tuple[str, bool]]:
  """The settings to lower, most effective first: `(setting, alone
  enough)`, by replanning with each at its smallest (BATCH_SIZE one row per
  data shard and microbatch, no prompt, one-token features)."""
  smallest_batch = mesh_shape[DATA_AXIS] * num_microbatches
  trials = {"BATCH_SIZE": dataclasses.replace(
      shape, batch_size=min(shape.batch_size, smallest_batch))}
  if shape.prompt_length:
    trials["PROMPT_LENGTH"] = dataclasses.replace(shape, prompt_length=0)
  trials["TASK_FEATURE_LENGTHS"] = dataclasses.replace(
      shape, inputs_length=1, targets_length=1)
  needs = {name: need(s) for name, s in trials.items()}
  order = sorted(needs, key=needs.get)
  return [(name, needs[name] <= available) for name in order]


def _message(shape: activations.StepShape, usage: Mapping[str, int],
             needed: int, capacity: Capacity,
             culprits: list[tuple[str, bool]], levers: memory.Levers,
             mesh_shape: Mapping[str, int]) -> str:
  """The refusal: the settings, the plan's bytes, the memory, the fix."""
  lengths = {"inputs": shape.inputs_length, "targets": shape.targets_length}
  values = {"BATCH_SIZE": str(shape.batch_size),
            "TASK_FEATURE_LENGTHS": str(lengths),
            "PROMPT_LENGTH": str(shape.prompt_length)}
  enough = [name for name, alone in culprits if alone]
  named = enough or [culprits[0][0]]
  lead = ", ".join(f"{name}={values[name]}" for name in named)
  rest = ", ".join(f"{name}={value}" for name, value in values.items()
                   if name not in named)
  fmt = memory.format_bytes
  parts = ", ".join(f"{name} {fmt(n)}" for name, n in usage.items() if n)
  mesh = "x".join(str(mesh_shape[a]) for a in MESH_AXES)
  total = sum(usage.values())
  low = (f"{fmt(needed)} for the {capacity.devices} devices together"
         if capacity.devices > 1 else fmt(needed))
  remat = ("" if levers.remat_policy == "full" else
           f"set REMAT_POLICY='full' (now {levers.remat_policy!r}), ")
  which = ("lowering it alone would fit" if len(enough) == 1 else
           "lowering any one of them would fit" if enough else
           "it weighs most")
  return (
      f"The training step cannot fit in memory: {lead} ({rest}) needs "
      f"{fmt(total)} per device by the memory plan on the {mesh} mesh "
      f"({parts}; planned from shapes, nothing loaded), at least {low} even "
      "at the estimate's low end, but this machine has "
      f"{capacity.what}. Lower {' or '.join(named)} ({which}), or raise "
      f"NUM_MICROBATCHES (now {levers.num_microbatches}), "
      f"{remat}or use a larger mesh (more devices, NUM_PARTITIONS); `python -m "
      f"prompt_tuning.plan --gin_file=... --mesh={mesh} --batch_size="
      f"{shape.batch_size} --inputs_length={shape.inputs_length} "
      f"--targets_length={shape.targets_length} --device_memory=... "
      "--suggest` lists settings "
      "that fit.")
