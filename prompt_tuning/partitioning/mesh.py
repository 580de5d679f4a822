"""Device meshes and named shardings from logical axis names.

Typical use (pjit semantics through `jax.jit` with shardings):

  mesh = create_mesh(num_partitions=2)          # ('data', 'model') = (n/2, 2)
  boxed = jax.eval_shape(model.init, rng, ...)  # params boxed with axis names
  check_logical_axes(boxed['params'])
  shardings = param_shardings(boxed['params'], mesh)
  f = jax.jit(fn, in_shardings=(shardings, batch_sharding(mesh)))
"""

import contextlib
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prompt_tuning.checkpoints import param_tree
from prompt_tuning.partitioning.rules import (KNOWN_LOGICAL_AXES,
                                              LOGICAL_AXIS_RULES, MESH_AXES)

Rules = Sequence[tuple[str, Optional[str]]]


def create_mesh(num_partitions: int = 1,
                mesh_shape: Optional[tuple[int, int]] = None,
                devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A `('data', 'model')` mesh over `devices` (default: all devices).

  Args:
    num_partitions: size of the `model` axis; `data` takes the rest.
    mesh_shape: explicit `(data, model)` shape; overrides num_partitions.
    devices: devices to use, default `jax.devices()`.
  """
  devices = list(jax.devices() if devices is None else devices)
  if mesh_shape is None:
    if num_partitions < 1 or len(devices) % num_partitions:
      raise ValueError(
          f"num_partitions={num_partitions} must divide the {len(devices)} "
          "available devices.")
    mesh_shape = (len(devices) // num_partitions, num_partitions)
  if int(np.prod(mesh_shape)) != len(devices):
    raise ValueError(
        f"Mesh shape {tuple(mesh_shape)} needs {int(np.prod(mesh_shape))} "
        f"devices but {len(devices)} are available; set mesh_shape so that "
        "data * model equals the device count.")
  return Mesh(np.asarray(devices).reshape(mesh_shape), MESH_AXES)


def check_logical_axes(boxed_params: Any) -> None:
  """Asserts every parameter carries one known logical name per dimension.

  Raises:
    ValueError naming each parameter that is unannotated, has the wrong
    number of names, or uses a name missing from the rule table.
  """
  flat = param_tree.flatten_params(boxed_params)
  problems = []
  for name, leaf in flat.items():
    if not isinstance(leaf, nn.LogicallyPartitioned):
      problems.append(f"{name}: no logical axis names")
      continue
    ndim = len(leaf.value.shape)
    if len(leaf.names) != ndim:
      problems.append(f"{name}: {len(leaf.names)} names {leaf.names} for "
                      f"{ndim} dimensions")
    unknown = [n for n in leaf.names if n is not None and
               n not in KNOWN_LOGICAL_AXES]
    if unknown:
      problems.append(f"{name}: axis names {unknown} are not in "
                      "partitioning.rules.LOGICAL_AXIS_RULES")
  if problems:
    raise ValueError("Parameters without valid logical axes:\n  " +
                     "\n  ".join(problems))


def logical_specs(boxed_tree: Any) -> Any:
  """Logical `PartitionSpec`s of a boxed tree (unboxed leaves: replicated)."""
  return nn.get_partition_spec(boxed_tree)


def fit_spec(spec: PartitionSpec, shape: Sequence[int],
             mesh: Mesh) -> PartitionSpec:
  """Replicates the dimensions of `spec` that `mesh` cannot split evenly.

  E.g. 2 heads on a 4-way `model` axis stay whole instead of failing, so one
  configuration runs on a laptop and on a pod.
  """
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    fitted.append(axes if ways and dim % ways == 0 else None)
  return PartitionSpec(*fitted)


def mesh_specs(boxed_tree: Any, mesh: Mesh,
               rules: Rules = LOGICAL_AXIS_RULES) -> Any:
  """Mesh `PartitionSpec`s for a boxed tree, fitted to its shapes."""
  specs = nn.logical_to_mesh(logical_specs(boxed_tree), rules)
  values = nn.unbox(boxed_tree)
  return jax.tree_util.tree_map(
      lambda spec, x: fit_spec(spec, x.shape, mesh), specs, values,
      is_leaf=lambda x: isinstance(x, PartitionSpec))


def param_shardings(boxed_tree: Any, mesh: Mesh,
                    rules: Rules = LOGICAL_AXIS_RULES) -> Any:
  """`NamedSharding`s for a tree boxed with logical names."""
  return jax.tree_util.tree_map(
      lambda spec: NamedSharding(mesh, spec), mesh_specs(boxed_tree, mesh, rules),
      is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Shards the leading (batch) axis of every batch feature over `data`."""
  return NamedSharding(mesh, PartitionSpec(MESH_AXES[0]))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: Rules = LOGICAL_AXIS_RULES):
  """Traces inside it see `mesh` and `rules`, so activation constraints
  (`nn.with_logical_constraint`) become real sharding constraints."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def opt_state_spec(leaf_shape: Sequence[int], param_shape: Sequence[int],
                   param_spec: PartitionSpec) -> PartitionSpec:
  """The spec of an optimizer-state leaf of parameter `param_shape`.

  The rule `training.partitioned.optimizer_state_shardings` and the memory
  plan use: the parameter's spec for a leaf of its shape, the spec without the last
  (second-to-last) axis for a factored row (column) statistic, replicated
  otherwise (scalars, the `[1]` placeholders of factored optimizers).
  """
  shape, leaf_shape = tuple(param_shape), tuple(leaf_shape)
  spec = tuple(param_spec) + (None,) * (len(shape) - len(param_spec))
  if leaf_shape == shape:
    out = spec
  elif len(shape) >= 2 and leaf_shape == shape[:-1]:
    out = spec[:-1]
  elif len(shape) >= 2 and leaf_shape == shape[:-2] + shape[-1:]:
    out = spec[:-2] + spec[-1:]
  else:
    out = ()
  return PartitionSpec(*out)
