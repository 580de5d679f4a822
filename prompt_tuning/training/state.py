"""The sharded training state, built from a model, a mesh and a checkpoint.

Below the training loop, evaluation, inference and the analyses: each asks
this module for its parameters or `TrainState` and gets them already placed
on `mesh` with the logical-axis rules' `NamedSharding`s.

`build_train_state(model, mesh, tx, checkpoint_path, split, ...)`:

  1. opens the pretrained checkpoint once (`checkpoints.sharded`): its
     format, step and parameter shapes in one record, no array data read;
  2. checks its names and shapes strictly against the model's before any
     array is read: only trainable parameters (the prompt, a head) may be
     missing, nothing may be extra or of another shape;
  3. reads each parameter it holds straight into its `NamedSharding`: every
     process reads only the slices its own devices hold, one parameter at a
     time, and no device ever holds an unsharded copy of a split parameter
     (each array's files checked and hashed as it is read, and the
     checkpoint's content fingerprint recorded for the frozen-base check);
  4. initialises only the parameters the checkpoint lacks, by a jitted init
     with `out_shardings` (XLA drops the rest of the model's init);
  5. redraws the prompt from the loaded embedding table (`prompt_init`) and
     takes a deep prompt from its `prompt_source`;
  6. splits trainable/frozen by the `ParamSplit` computed once by the checks
     (the frozen half cast once to FROZEN_DTYPE, stored so on the devices)
     and creates the optimizer state of the trainable half, sharded like it
     (Adafactor's step counter from the checkpoint's step, as the original).

`load_trained_params` adds a finished run's trained parameters from its
orbax checkpoints (evaluation, inference, analyses).
"""

import dataclasses
import logging
import os
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import numpy as np
import optax

from prompt_tuning import partitioning
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import run_checkpoints
from prompt_tuning.checkpoints import sharded
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.prompts import deep_init
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts import initializers
from prompt_tuning.training import checkpointer as train_ckpt
from prompt_tuning.training import optimizers
from prompt_tuning.training import partitioned
from prompt_tuning.training.train_state import TrainState, create_train_state

_log = logging.getLogger(__name__)

# Adafactor's step counter at the start of a run: the pretrained T5X
# checkpoint's own step (the original's behaviour, the default), or 0. A
# checkpoint without one (Hugging Face) or none at all starts at 0.
OPTIMIZER_STEP_ZERO = "zero"
OPTIMIZER_STEP_RESTORED = "restored"


@dataclasses.dataclass
class InitialParams:
  """Attributes:
    params: the model's parameters, each a global `jax.Array` on the mesh.
    shardings: their `NamedSharding`s (same tree).
    step: the pretrained checkpoint's step (T5X), else None.
    loaded: names read from the checkpoint; the others were initialised.
    fingerprint: the checkpoint's content fingerprint
      (`sharded.CheckpointRecord.content_fingerprint`); None without one.
  """
  params: Any
  shardings: Any
  step: Optional[int]
  loaded: tuple[str, ...]
  fingerprint: Optional[str] = None


def place(host: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array (the same on every process) as a global array: each
  device receives only its slice."""
  host = np.asarray(host)
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


def initial_params(model: EncoderDecoderModel, boxed_params: Any,
                   mesh: jax.sharding.Mesh, checkpoint_path: Optional[str],
                   split: freezing.ParamSplit,
                   rng: jax.Array) -> InitialParams:
  """Steps 1-5 of the module doc: the sharded initial parameters.

  Args:
    model: the model.
    boxed_params: its boxed parameter shapes (logical axes checked).
    mesh: where the parameters go.
    checkpoint_path: T5X or Hugging Face checkpoint; None: all random.
    split: the trainable set; only its parameters may be missing from the
      checkpoint.
    rng: split into the init key and the prompt key.

  Raises:
    validation.ParamMismatchError: before any array is read, when the
      checkpoint lacks a frozen parameter, has one the model does not, or
      one of another shape.
  """
  init_rng, prompt_rng = jax.random.split(rng)
  shapes = param_tree.flatten_params(nn.unbox(boxed_params))
  shardings = param_tree.flatten_params(
      partitioning.param_shardings(boxed_params, mesh))
  step, flat, fingerprint = None, {}, None
  if checkpoint_path:
    with sharded.open_checkpoint(checkpoint_path) as record:
      held = set(record.names)
      expected = {k: v for k, v in shapes.items()
                  if k in held or not split.is_trainable(k)}
      record.check(param_tree.unflatten_params(expected),
                   expected_source="the gin model config")
      step = record.step
      for name in expected:  # One parameter at a time, straight to devices.
        flat[name] = record.read(name, shardings[name], shapes[name].dtype)
      # From the checksums of the files just read (each verified then).
      fingerprint = record.content_fingerprint()
  missing = [name for name in shapes if name not in flat]
  if missing:
    def init_missing(key):
      every = param_tree.flatten_params(
          nn.unbox(model.init(key, 1, 1))["params"])
      return {name: every[name] for name in missing}
    flat.update(jax.jit(init_missing, out_shardings={
        name: shardings[name] for name in missing})(init_rng))
  params = param_tree.unflatten_params({name: flat[name] for name in shapes})
  init = getattr(model.module, "prompt_init", None)
  if init is not None and checkpoint_path:
    params = initializers.initialize_prompt(params, init, prompt_rng)
  source = getattr(model.module, "prompt_source", None)
  if source is not None:
    params = deep_init.initialize_deep_prompt(params, source)
  # Redrawn leaves (host or single-device values) go to their shardings.
  flat = param_tree.flatten_params(params)
  for name, value in flat.items():
    if getattr(value, "sharding", None) != shardings[name]:
      flat[name] = (jax.device_put(value, shardings[name])
                    if isinstance(value, jax.Array) and
                    value.is_fully_addressable else
                    place(np.asarray(value), shardings[name]))
  return InitialParams(params=param_tree.unflatten_params(flat),
                       shardings=param_tree.unflatten_params(shardings),
                       step=step,
                       loaded=tuple(n for n in shapes if n not in missing),
                       fingerprint=fingerprint)


@dataclasses.dataclass
class BuiltState:
  """Attributes:
    state: the sharded initial `TrainState` (before any resume).
    shardings: its `NamedSharding`s.
    boxed_params: the model's boxed parameter shapes.
    frozen_record: the frozen base's path, content fingerprint and shapes
      (`checkpointer.frozen_base_record`, checked at restore).
  """
  state: TrainState
  shardings: TrainState
  boxed_params: Any
  frozen_record: dict[str, Any]


def model_shapes(model: EncoderDecoderModel,
                 task_feature_lengths: Mapping[str, int]) -> Any:
  """The model's boxed parameter shapes, logical axes checked."""
  boxed = model.init_shapes(task_feature_lengths["inputs"],
                            task_feature_lengths["targets"])["params"]
  partitioning.check_logical_axes(boxed)
  return boxed


def build_train_state(model: EncoderDecoderModel, mesh: jax.sharding.Mesh,
                      tx: optax.GradientTransformation,
                      checkpoint_path: Optional[str],
                      split: freezing.ParamSplit, *,
                      boxed_params: Any,
                      optimizer_step: str = OPTIMIZER_STEP_RESTORED,
                      rng: Optional[jax.Array] = None,
                      frozen_dtype: Optional[str] = None) -> BuiltState:
  """The sharded initial `TrainState`; see the module doc.

  Args:
    model: the model.
    mesh: the device mesh.
    tx: the optimizer of the trainable half.
    checkpoint_path: pretrained weights; None: random initialisation.
    split: the trainable set (`freezing.compute_split`, e.g. preflight's).
    boxed_params: `model_shapes(...)` (or preflight's).
    optimizer_step: 'restored' starts Adafactor's step counter at the T5X
      checkpoint's step (0 without one); 'zero' at 0.
    rng: init and prompt key; default PRNGKey(0).
    frozen_dtype: the frozen half's storage dtype, cast once here
      (`run_settings.PartitioningConfig.frozen_dtype`); None keeps the
      loaded dtype.
  """
  if optimizer_step not in (OPTIMIZER_STEP_ZERO, OPTIMIZER_STEP_RESTORED):
    raise ValueError(f"optimizer_step must be {OPTIMIZER_STEP_ZERO!r} or "
                     f"{OPTIMIZER_STEP_RESTORED!r}, got {optimizer_step!r}.")
  rng = jax.random.PRNGKey(0) if rng is None else rng
  initial = initial_params(model, boxed_params, mesh, checkpoint_path, split,
                           rng)
  start = 0
  if optimizer_step == OPTIMIZER_STEP_RESTORED and initial.step is not None:
    start = initial.step
    _log.info("Adafactor's step counter starts at %d, restored from %s (as "
              "the original; OPTIMIZER_STEP='zero' starts at 0).", start,
              checkpoint_path)

  def make_state(params):
    return create_train_state(params, split, tx, start, frozen_dtype)

  state_shapes = jax.eval_shape(make_state, initial.params)
  shardings = partitioned.state_shardings(boxed_params, state_shapes, split,
                                          mesh)
  # Donated: the state's halves reuse the loaded weights' buffers.
  state = jax.jit(make_state, out_shardings=shardings,
                  donate_argnums=(0,))(initial.params)
  record = train_ckpt.frozen_base_record(state.frozen, checkpoint_path,
                                         initial.fingerprint)
  return BuiltState(state, shardings, boxed_params, record)


@dataclasses.dataclass
class TrainedParams:
  """Attributes:
    params: all parameters, sharded on `mesh`.
    param_shardings: their `NamedSharding`s.
    step: the restored training step (0 without a run).
    mesh: the mesh they live on.
  """
  params: Any
  param_shardings: Any
  step: int
  mesh: jax.sharding.Mesh


def load_trained_params(model: EncoderDecoderModel,
                        task_feature_lengths: Mapping[str, int],
                        model_dir: Optional[str],
                        initial_checkpoint_path: Optional[str],
                        split: freezing.ParamSplit,
                        step: Optional[int] = None,
                        optimizer: Optional[optax.GradientTransformation] = None,
                        num_partitions: int = 1,
                        mesh_shape: Optional[tuple[int, int]] = None
                        ) -> TrainedParams:
  """Frozen base from `initial_checkpoint_path` + trained parameters from
  `model_dir`'s checkpoint (`step`, default latest), sharded on a new mesh.

  With `model_dir=None` the untrained initial parameters are returned (the
  prompt freshly initialised), e.g. to evaluate a zero-shot baseline.
  """
  mesh = partitioning.create_mesh(num_partitions, mesh_shape)
  boxed = model_shapes(model, task_feature_lengths)
  built = build_train_state(model, mesh, optimizer or optimizers.adafactor(),
                            initial_checkpoint_path, split,
                            boxed_params=boxed)
  state, restored_step = built.state, 0
  if model_dir is not None:
    if not os.path.isdir(run_checkpoints.checkpoints_dir(model_dir)):
      raise FileNotFoundError(
          "No training checkpoints under "
          f"{run_checkpoints.checkpoints_dir(model_dir)}; set MODEL_DIR to "
          "the directory a prompt_tuning.train run wrote.")
    checkpointer = train_ckpt.TrainCheckpointer(model_dir)
    try:
      # A reader: a damaged newest step is skipped, not moved aside (a
      # training run may hold the folder).
      restored = checkpointer.restore(state, step,
                                      frozen_record=built.frozen_record,
                                      set_aside=False)
    finally:
      checkpointer.close()
    state, restored_step = restored.state, int(restored.state.step)
  return TrainedParams(
      params=state.params,
      param_shardings=partitioning.param_shardings(boxed, mesh),
      step=restored_step, mesh=mesh)
