"""Training checkpoints with orbax: prompt-only by default, atomic, keep N.

A checkpoint `MODEL_DIR/checkpoints/<step>/` holds (the layout and its names
are `checkpoints.run_checkpoints`', which also reads them back to the host)

  state/   `{step, trainable, opt_state}` (and `frozen` if asked for);
  meta/    JSON: the data-iterator position, the trainable patterns and a
           record of the frozen base (its path and every parameter shape).

For a length-100 prompt on T5 1.1-small that is a few hundred kilobytes
instead of the model's hundreds of megabytes. Orbax writes each step to a
temporary directory and renames it when complete, so an interrupted save
never leaves a half-written checkpoint behind; the newest complete one is
what a re-run resumes from.

Restoring is strict: the trainable tree must match exactly, and the frozen
base recorded at save time must have the same parameter names and shapes as
the one the run restored from its initial checkpoint.
"""

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import run_checkpoints as layout
from prompt_tuning.training.train_state import TrainState


class FrozenBaseMismatchError(ValueError):
  """The checkpoint was trained on a different frozen model."""


def frozen_base_record(frozen: Any, path: Optional[str]) -> dict[str, Any]:
  """JSON-able description of the frozen parameters: path and shapes."""
  return {
      "path": None if path is None else os.fspath(path),
      "shapes": {name: list(np.shape(leaf)) for name, leaf in
                 param_tree.flatten_params(frozen).items()},
  }


def check_frozen_base(recorded: Mapping[str, Any],
                      current: Mapping[str, Any]) -> None:
  """Raises `FrozenBaseMismatchError` if the frozen shapes differ."""
  old, new = recorded.get("shapes", {}), current.get("shapes", {})
  problems = [f"{n}: missing now" for n in sorted(set(old) - set(new))]
  problems += [f"{n}: not in the checkpoint" for n in sorted(set(new) - set(old))]
  problems += [f"{n}: checkpoint {old[n]} vs now {new[n]}"
               for n in sorted(set(old) & set(new)) if old[n] != new[n]]
  if problems:
    raise FrozenBaseMismatchError(
        f"This checkpoint was trained on a different frozen model "
        f"({recorded.get('path')}) than the one restored now "
        f"({current.get('path')}): " + "; ".join(problems[:20]) +
        ". Use the same model gin file and INITIAL_CHECKPOINT_PATH as the "
        "run that wrote it, or a new MODEL_DIR.")


def has_checkpoint(model_dir: str, subdir: str = layout.CHECKPOINTS) -> bool:
  """Whether `model_dir/subdir` holds a complete checkpoint; reads only."""
  return layout.has_checkpoint(model_dir, subdir)


@dataclasses.dataclass
class Restored:
  state: TrainState
  data_position: int
  meta: dict[str, Any]


class TrainCheckpointer:
  """Saves and restores `TrainState`s under `MODEL_DIR/<subdir>`.

  Attributes:
    directory: where step folders go.
    keep: how many recent checkpoints to keep.
    save_frozen: also save the frozen parameters (full fine-tuning).
  """

  def __init__(self, model_dir: str, *, keep: int = 3,
               save_frozen: bool = False, subdir: str = layout.CHECKPOINTS,
               best_metric: Optional[str] = None, best_mode: str = "max"):
    self.directory = layout.checkpoints_dir(model_dir, subdir)
    self.save_frozen = save_frozen
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        enable_async_checkpointing=False,
        best_fn=(None if best_metric is None else
                 lambda metrics: float(metrics[best_metric])),
        best_mode=best_mode,
        keep_checkpoints_without_metrics=best_metric is None)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=(layout.STATE, layout.META))

  def _saved_tree(self, state: TrainState) -> dict[str, Any]:
    tree = {layout.STEP: state.step, layout.TRAINABLE: state.trainable,
            layout.OPT_STATE: state.opt_state}
    if self.save_frozen:
      tree[layout.FROZEN] = state.frozen
    return tree

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> Sequence[int]:
    return self._manager.all_steps()

  def save(self, state: TrainState, *, data_position: int,
           frozen_record: Mapping[str, Any],
           trainable_patterns: Sequence[str],
           metrics: Optional[Mapping[str, float]] = None) -> int:
    """Writes a checkpoint for `state.step`; returns the step."""
    step = int(jax.device_get(state.step))
    meta = {"data_position": int(data_position),
            "trainable_patterns": list(trainable_patterns),
            "frozen_base": dict(frozen_record),
            "metrics": None if metrics is None else
                       {k: float(v) for k, v in metrics.items()}}
    self._manager.save(
        step,
        args=ocp.args.Composite(**{
            layout.STATE: ocp.args.StandardSave(self._saved_tree(state)),
            layout.META: ocp.args.JsonSave(meta)}),
        metrics=None if metrics is None else dict(meta["metrics"]),
        force=True)
    self._manager.wait_until_finished()
    return step

  def restore(self, template: TrainState, step: Optional[int] = None, *,
              frozen_record: Optional[Mapping[str, Any]] = None) -> Restored:
    """Restores into the shapes and shardings of `template`.

    Args:
      template: a state (arrays or `ShapeDtypeStruct`s with shardings)
        whose frozen half is kept unless the checkpoint saved it.
      step: which step; default the latest.
      frozen_record: the current frozen base, checked against the saved one.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=getattr(x, "sharding", None)),
        self._saved_tree(template))
    meta = dict(self._manager.restore(step, args=ocp.args.Composite(
        **{layout.META: ocp.args.JsonRestore()}))[layout.META])
    if frozen_record is not None:
      check_frozen_base(meta["frozen_base"], frozen_record)
    try:
      tree = self._manager.restore(step, args=ocp.args.Composite(**{
          layout.STATE: ocp.args.StandardRestore(abstract, strict=True)
      }))[layout.STATE]
    except ValueError as e:
      raise ValueError(
          f"Checkpoint {self.directory}/{step} does not match this model's "
          f"trainable parameters or optimizer ({e}). Was PROMPT_LENGTH, the "
          "prompt type or the optimizer changed? Use the run's own gin "
          "config (MODEL_DIR/config.gin) or a new MODEL_DIR.") from e
    state = template.replace(step=tree[layout.STEP],
                             trainable=tree[layout.TRAINABLE],
                             opt_state=tree[layout.OPT_STATE],
                             frozen=tree.get(layout.FROZEN, template.frozen))
    return Restored(state=state, data_position=int(meta["data_position"]),
                    meta=meta)

  def close(self) -> None:
    self._manager.close()
