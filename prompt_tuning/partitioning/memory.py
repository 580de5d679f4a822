"""Per-device memory of a training step, planned from shapes alone.

Nothing is loaded or allocated: parameters come as boxed
`ShapeDtypeStruct`s (`EncoderDecoderModel.init_shapes(...)["params"]`), the
mesh is a `{'data': d, 'model': m}` dict of axis sizes (any size: a 32-chip
mesh is planned on a laptop), and shard shapes follow from the same logical
rules and even-split fitting (`mesh.fit_spec`) that the trainer's real
shardings use:

  boxed = model.init_shapes(512, 8)["params"]
  plan = plan_memory(boxed, {"data": 4, "model": 8}, ("prompt/prompt",),
                     optax.adafactor(0.3),
                     activations.StepShape(32, 512, 8, prompt_length=100),
                     activations.ActivationDims.from_config(config),
                     Levers(remat_policy="full", frozen_dtype="bfloat16"))
  print(format_plan(plan, device_bytes=16 * 2**30))

Parameters, gradients and optimizer state are exact (up to allocator
padding); activations are an estimate (`activations.activation_bytes`).
"""

import dataclasses
import math
import re
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

from prompt_tuning.checkpoints import param_tree
from prompt_tuning.partitioning import activations
from prompt_tuning.partitioning import mesh as mesh_lib
from prompt_tuning.partitioning.mesh import fit_spec
from prompt_tuning.partitioning.rules import (DATA_AXIS, LOGICAL_AXIS_RULES,
                                              MESH_AXES, MODEL_AXIS)
from prompt_tuning.training import run_settings

Rules = mesh_lib.Rules
DTypeLike = Any
GiB = 2**30

COMPONENTS = ("frozen", "trainable", "gradients", "optimizer", "activations")


def abstract_mesh(mesh_shape: Mapping[str, int]) -> AbstractMesh:
  """A device-less mesh with `mesh_shape`'s axis sizes, in MESH_AXES order.

  Axes missing from `mesh_shape` get size 1; unknown axes are an error.
  """
  unknown = sorted(set(mesh_shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"Unknown mesh axes {unknown}; the mesh axes are "
                     f"{MESH_AXES}.")
  sizes = tuple(int(mesh_shape.get(a, 1)) for a in MESH_AXES)
  if any(s < 1 for s in sizes):
    raise ValueError(f"Mesh axis sizes must be >= 1, got {dict(mesh_shape)}.")
  return AbstractMesh(sizes, MESH_AXES)


def parse_mesh(text: str) -> dict[str, int]:
  """`'4x8'` -> `{'data': 4, 'model': 8}` (data x model)."""
  parts = text.lower().replace("*", "x").split("x")
  if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
    raise ValueError(f"Mesh {text!r} should look like DATAxMODEL, e.g. 4x8.")
  data, model = (int(p) for p in parts)
  if data < 1 or model < 1:
    raise ValueError(f"Mesh {text!r} needs axis sizes >= 1.")
  return {DATA_AXIS: data, MODEL_AXIS: model}


def _is_box(x: Any) -> bool:
  return isinstance(x, nn.LogicallyPartitioned)


@dataclasses.dataclass(frozen=True)
class LeafPlan:
  """One array: global and per-device shape, mesh spec and dtype."""
  shape: tuple[int, ...]
  shard_shape: tuple[int, ...]
  spec: PartitionSpec
  dtype: np.dtype

  @property
  def logical_bytes(self) -> int:
    """Bytes of one full copy."""
    return math.prod(self.shape) * self.dtype.itemsize

  @property
  def device_bytes(self) -> int:
    """Bytes each device holds (its shard)."""
    return math.prod(self.shard_shape) * self.dtype.itemsize


def _leaf(shape: Sequence[int], dtype: DTypeLike, spec: PartitionSpec,
          mesh: AbstractMesh) -> LeafPlan:
  shape = tuple(int(s) for s in shape)
  spec = fit_spec(spec, shape, mesh)
  shard = tuple(NamedSharding(mesh, spec).shard_shape(shape))
  return LeafPlan(shape, shard, spec, np.dtype(dtype))


def param_leaf_plans(boxed_params: Any, mesh_shape: Mapping[str, int],
                     rules: Rules = LOGICAL_AXIS_RULES,
                     frozen_dtype: Optional[DTypeLike] = None,
                     trainable_patterns: Sequence[str] = ()
                     ) -> dict[str, LeafPlan]:
  """Every parameter's shard on a mesh of `mesh_shape`, by '/'-joined name.

  Args:
    boxed_params: nested dict of `nn.LogicallyPartitioned` (or plain)
      `ShapeDtypeStruct`s / arrays; unboxed leaves are replicated.
    mesh_shape: axis sizes, e.g. `{'data': 4, 'model': 8}`.
    rules: logical-to-mesh axis rules.
    frozen_dtype: storage dtype of the frozen parameters, the floating
      ones (FROZEN_DTYPE); default: each leaf's own.
    trainable_patterns: regexes of the trainable parameters, which keep
      their own dtype.

  Returns:
    `{name: LeafPlan}`; a dimension the mesh cannot split evenly is
    replicated, as `mesh.fit_spec` does for real meshes.
  """
  mesh = abstract_mesh(mesh_shape)
  flat = param_tree.flatten_params(boxed_params)
  plans = {}
  for name, leaf in flat.items():
    if _is_box(leaf):
      logical = PartitionSpec(*leaf.names)
      spec = nn.logical_to_mesh(logical, rules)
      value = leaf.value
    else:
      spec, value = PartitionSpec(), leaf
    dtype = value.dtype
    if (frozen_dtype is not None and np.issubdtype(dtype, np.floating) and
        not is_trainable(name, trainable_patterns)):
      dtype = frozen_dtype
    plans[name] = _leaf(value.shape, dtype, spec, mesh)
  return plans


def is_trainable(name: str, patterns: Sequence[str]) -> bool:
  """Whether `name` fully matches one of the regexes (as
  `prompts.freezing` splits parameters)."""
  if isinstance(patterns, str):
    raise TypeError(f"patterns must be a sequence of regexes, got the string "
                    f"{patterns!r}; write ({patterns!r},).")
  return any(re.fullmatch(p, name) for p in patterns)


def _unflatten_shapes(plans: Mapping[str, LeafPlan]) -> dict[str, Any]:
  return param_tree.unflatten_params(
      plans, lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype))


def optimizer_leaf_plans(tx: optax.GradientTransformation,
                         trainable: Mapping[str, LeafPlan],
                         mesh_shape: Mapping[str, int]) -> list[LeafPlan]:
  """Shards of `tx`'s state for the trainable parameters, from shapes only
  (`jax.eval_shape(tx.init, ...)`), each sharded like its parameter."""
  mesh = abstract_mesh(mesh_shape)
  shapes = jax.eval_shape(tx.init, _unflatten_shapes(trainable))
  out = []

  def visit(path, leaf):
    if not hasattr(leaf, "shape"):
      return
    param = trainable.get(param_tree.name_of_path(path))
    spec = (PartitionSpec() if param is None else
            mesh_lib.opt_state_spec(leaf.shape, param.shape, param.spec))
    out.append(_leaf(leaf.shape, leaf.dtype, spec, mesh))

  jax.tree_util.tree_map_with_path(visit, shapes)
  return out


@dataclasses.dataclass(frozen=True)
class Usage:
  """Bytes of one component: per device, and one unsharded copy."""
  per_device: int
  logical: int


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Per-device memory of a training step on a mesh (bytes).

  Attributes:
    mesh_shape: `{'data': d, 'model': m}`.
    usage: `{component: Usage}` for COMPONENTS.
    num_trainable / num_frozen: parameter counts.
    activations_estimated: always True; activations are an estimate.
  """
  mesh_shape: dict[str, int]
  usage: dict[str, Usage]
  num_trainable: int
  num_frozen: int
  activations_estimated: bool = True

  @property
  def num_devices(self) -> int:
    return math.prod(self.mesh_shape.values())

  @property
  def per_device(self) -> int:
    """Total bytes on each device."""
    return sum(u.per_device for u in self.usage.values())

  @property
  def all_devices(self) -> int:
    """Total bytes over the whole mesh, replicas included."""
    return self.per_device * self.num_devices

  @property
  def logical(self) -> int:
    """Total bytes of one unsharded copy of everything."""
    return sum(u.logical for u in self.usage.values())

  def fits(self, device_bytes: int, activation_margin: float = 0.0) -> bool:
    """Whether each device holds the step, its activation estimate grown by
    `activation_margin` (a fraction: the estimate's calibrated error)."""
    margin = activation_margin * self.usage["activations"].per_device
    return self.per_device + margin <= device_bytes


@dataclasses.dataclass(frozen=True)
class Levers:
  """The trainer's memory settings, as a plan varies them.

  Attributes:
    remat_policy: REMAT_POLICY (`models.config.REMAT_POLICIES`).
    num_microbatches: NUM_MICROBATCHES (`run_settings.PartitioningConfig`).
    activation_dtype: ACTIVATION_DTYPE (the model config's `dtype`).
    frozen_dtype: FROZEN_DTYPE (`run_settings.FROZEN_DTYPES`).
  """
  remat_policy: str
  num_microbatches: int
  activation_dtype: str
  frozen_dtype: str

  def check(self) -> None:
    """Raises ValueError naming the setting that is out of range."""
    activations.check_levers(self.remat_policy, self.num_microbatches)
    run_settings.check_frozen_dtype(self.frozen_dtype)

  def narrow_dtypes(self) -> dict[str, str]:
    """The settings narrower than the original's float32, by what they
    hold: `{'activations': 'bfloat16', 'frozen': 'bfloat16'}` at most."""
    return {what: dtype for what, dtype in (("activations",
                                             self.activation_dtype),
                                            ("frozen", self.frozen_dtype))
            if dtype != "float32"}

  def describe(self) -> str:
    return (f"REMAT_POLICY={self.remat_policy!r} NUM_MICROBATCHES="
            f"{self.num_microbatches} ACTIVATION_DTYPE="
            f"{self.activation_dtype!r} FROZEN_DTYPE={self.frozen_dtype!r}")


def plan_memory(boxed_params: Any, mesh_shape: Mapping[str, int],
                trainable_patterns: Sequence[str],
                tx: Optional[optax.GradientTransformation],
                shape: activations.StepShape,
                dims: activations.ActivationDims, levers: Levers,
                rules: Rules = LOGICAL_AXIS_RULES) -> MemoryPlan:
  """Plans a training step's per-device memory on a mesh of `mesh_shape`.

  Args:
    boxed_params: boxed parameter shapes, `model.init_shapes(...)["params"]`.
    mesh_shape: `{'data': d, 'model': m}`; no such devices are needed.
    trainable_patterns: regexes over '/'-joined names (`prompts.freezing`).
    tx: the optimizer (state for trainable parameters only); None: no state.
    shape: global batch (split over `data`), lengths, prompt and prefixes.
    dims: model sizes for the activation estimate.
    levers: remat policy, microbatches, activation and frozen dtypes.
    rules: logical-to-mesh axis rules.

  Returns:
    A `MemoryPlan`: frozen parameters (in `levers.frozen_dtype`),
    trainable parameters, their gradients and optimizer state (their own
    dtype; exact shard sizes) and activations
    (`activations.activation_bytes`, an estimate; with frozen weights
    narrower than the activations, plus one cast copy of the largest frozen
    parameter, the embedding table, in the activation dtype).
  """
  levers.check()
  plans = param_leaf_plans(boxed_params, mesh_shape, rules,
                           levers.frozen_dtype, trainable_patterns)
  trainable = {k: p for k, p in plans.items()
               if is_trainable(k, trainable_patterns)}
  frozen = [p for k, p in plans.items() if k not in trainable]
  opt = [] if tx is None else optimizer_leaf_plans(tx, trainable, mesh_shape)

  def usage(leaves) -> Usage:
    leaves = list(leaves)
    return Usage(sum(p.device_bytes for p in leaves),
                 sum(p.logical_bytes for p in leaves))

  act = activations.activation_bytes(
      dims, shape, mesh_shape, levers.activation_dtype, levers.remat_policy,
      levers.num_microbatches)
  width = np.dtype(levers.activation_dtype).itemsize
  narrow = [p for p in frozen if p.dtype.itemsize < width]
  if narrow:  # Kernels cast to the activation dtype as they are used.
    big = max(narrow, key=lambda p: p.device_bytes)
    scale = width // big.dtype.itemsize
    act = (act[0] + big.device_bytes * scale,
           act[1] + big.logical_bytes * scale)
  return MemoryPlan(
      mesh_shape=dict(mesh_shape),
      usage={"frozen": usage(frozen),
             "trainable": usage(trainable.values()),
             "gradients": usage(trainable.values()),
             "optimizer": usage(opt),
             "activations": Usage(*act)},
      num_trainable=sum(math.prod(p.shape) for p in trainable.values()),
      num_frozen=sum(math.prod(p.shape) for p in frozen))


def parse_bytes(text: str) -> int:
  """`'16GiB'`, `'80GB'`, `'512MiB'`, `'1e9'` -> bytes."""
  units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
           "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
           "tib": 2**40}
  match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
  unit = match.group(2).lower() if match else None
  if not match or unit not in units:
    raise ValueError(f"Memory size {text!r} should look like 16GiB, 80GB or "
                     "512MiB.")
  return int(float(match.group(1)) * units[unit])


def format_bytes(n: float) -> str:
  """Bytes in binary units, e.g. `'1.50 GiB'`."""
  for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20),
                     ("KiB", 2**10)):
    if abs(n) >= size:
      return f"{n / size:.2f} {unit}"
  return f"{int(n)} B"


def format_plan(plan: MemoryPlan, device_bytes: Optional[int] = None) -> str:
  """The plan as a markdown table (per device, whole mesh, one copy)."""
  mesh = "x".join(str(plan.mesh_shape.get(a, 1)) for a in MESH_AXES)
  lines = [f"mesh {mesh} ({' x '.join(MESH_AXES)}, {plan.num_devices} "
           f"devices); {plan.num_trainable:,} trainable and "
           f"{plan.num_frozen:,} frozen parameters", "",
           "| component | per device | all devices | one copy |",
           "|---|---:|---:|---:|"]
  for name in COMPONENTS:
    u = plan.usage[name]
    label = name + (" (estimate)" if name == "activations" else "")
    lines.append(f"| {label} | {format_bytes(u.per_device)} | "
                 f"{format_bytes(u.per_device * plan.num_devices)} | "
                 f"{format_bytes(u.logical)} |")
  lines.append(f"| **total** | **{format_bytes(plan.per_device)}** | "
               f"{format_bytes(plan.all_devices)} | "
               f"{format_bytes(plan.logical)} |")
  if device_bytes is not None:
    verdict = "fits" if plan.fits(device_bytes) else "does NOT fit"
    lines += ["", f"{format_bytes(plan.per_device)} per device {verdict} in "
              f"{format_bytes(device_bytes)} "
              f"({100 * plan.per_device / device_bytes:.0f}%)."]
  return "\n".join(lines)
