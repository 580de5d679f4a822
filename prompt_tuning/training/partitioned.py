"""The one place where train and eval steps are compiled, with shardings.

Parameter shardings come from the logical axis names every parameter
carries (`partitioning.LOGICAL_AXIS_RULES`); optimizer-state leaves inherit
the sharding of the parameter they belong to (factored second moments drop
the factored dimension); batches are sharded over `data`.
"""

import functools
from typing import Any, Callable

import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from prompt_tuning import partitioning
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.partitioning import activations
from prompt_tuning.prompts import freezing
from prompt_tuning.training import steps
from prompt_tuning.training.train_state import TrainState


def optimizer_state_shardings(opt_state_shapes: Any, param_shapes: Any,
                              param_specs: Any, mesh: Mesh) -> Any:
  """Shards optimizer-state leaves like the parameters they track.

  A leaf reached through the dict keys of parameter `p` gets `p`'s spec when
  it has `p`'s shape, the spec without the last (or second-to-last) axis
  when it is a factored row (column) statistic, and is replicated otherwise.
  """
  shapes = param_tree.flatten_params(param_shapes)
  specs = param_tree.flatten_params(param_specs)

  def sharding(path, leaf):
    name = param_tree.name_of_path(path)
    spec = specs.get(name)
    if spec is None or not hasattr(leaf, "shape"):
      return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, partitioning.opt_state_spec(
        leaf.shape, shapes[name].shape, spec))

  return jax.tree_util.tree_map_with_path(sharding, opt_state_shapes)


def state_shardings(boxed_params: Any, state_shapes: TrainState,
                    split: freezing.ParamSplit, mesh: Mesh) -> TrainState:
  """A `TrainState` of `NamedSharding`s matching `state_shapes`."""
  partitioning.check_logical_axes(boxed_params)
  mesh_specs = partitioning.mesh_specs(boxed_params, mesh)
  to_sharding = lambda spec: NamedSharding(mesh, spec)
  shardings = jax.tree_util.tree_map(
      to_sharding, mesh_specs,
      is_leaf=lambda x: isinstance(x, PartitionSpec))
  trainable, frozen = split.split(shardings)
  trainable_specs, _ = split.split(mesh_specs)
  return TrainState(
      step=NamedSharding(mesh, PartitionSpec()),
      trainable=trainable,
      frozen=frozen,
      opt_state=optimizer_state_shardings(state_shapes.opt_state,
                                          state_shapes.trainable,
                                          trainable_specs, mesh))


def _in_mesh(mesh: Mesh, fn: Callable[..., Any]) -> Callable[..., Any]:
  """Calls (and so traces) `fn` with `mesh` and the axis rules in context."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with partitioning.mesh_context(mesh):
      return fn(*args, **kwargs)
  return wrapped


def compile_train_step(loss_fn: steps.LossFn, tx: optax.GradientTransformation,
                       mesh: Mesh, shardings: TrainState,
                       num_microbatches: int = 1,
                       remat_policy: str = "none") -> Callable[..., Any]:
  """`train_step(state, batch, dropout_rng) -> (state, metrics)`, jitted.

  `remat_policy` is the model's (`T5Config.remat_policy`): on CPU it picks
  the compiler options that keep rematerialisation in the backward pass
  (`activations.train_compiler_options`). The input state is donated: do
  not reuse it after the call.
  """
  fn = functools.partial(steps.train_step, loss_fn=loss_fn, tx=tx,
                         num_microbatches=num_microbatches)
  replicated = partitioning.replicated(mesh)
  jitted = jax.jit(
      fn,
      in_shardings=(shardings, partitioning.batch_sharding(mesh), replicated),
      out_shardings=(shardings, replicated),
      donate_argnums=(0,),
      compiler_options=activations.train_compiler_options(
          remat_policy, mesh.devices.flat[0].platform))
  return _in_mesh(mesh, jitted)


def compile_eval_step(loss_fn: steps.LossFn, mesh: Mesh,
                      shardings: TrainState) -> Callable[..., Any]:
  """`eval_step(state, batch) -> metrics`, jitted."""
  fn = functools.partial(steps.eval_step, loss_fn=loss_fn)
  jitted = jax.jit(fn, in_shardings=(shardings,
                                     partitioning.batch_sharding(mesh)),
                   out_shardings=partitioning.replicated(mesh))
  return _in_mesh(mesh, jitted)


def compile_model_fn(fn: Callable[..., Any], mesh: Mesh, param_shardings: Any,
                     **static) -> Callable[..., Any]:
  """Jits `fn(params, batch, **static)` (e.g. `model.predict_batch`) with
  parameter and batch shardings, for evaluation and inference."""
  jitted = jax.jit(functools.partial(fn, **static),
                   in_shardings=(param_shardings,
                                 partitioning.batch_sharding(mesh)))
  return _in_mesh(mesh, jitted)
