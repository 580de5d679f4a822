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

Runs repair themselves: `meta` records the checksum of every saved array
and a restore verifies them (records without checksums, from older runs,
restore unverified); a resume whose newest step is damaged (a truncated
file, a missing item, a changed value) moves that step aside and resumes
from the newest good one; saving a step that exists already (a re-run
after a kill) is a no-op when the content is the same and a safe
replacement when it is not.
"""

import dataclasses
import logging
import os
import shutil
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from prompt_tuning.checkpoints import integrity
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import run_checkpoints as layout
from prompt_tuning.training import distributed
from prompt_tuning.training.train_state import TrainState

_log = logging.getLogger(__name__)


class FrozenBaseMismatchError(ValueError):
  """The checkpoint was trained on a different frozen model."""


class CheckpointMismatchError(ValueError):
  """The checkpoint's trainable parameters or optimizer state have other
  names or shapes than this model's: a setting changed."""


class DamagedCheckpointError(RuntimeError):
  """A step cannot be restored: a file or item is unreadable or missing,
  or an array differs from its recorded checksum.

  Attributes:
    step: the step.
    reason: the error, in one line.
  """

  def __init__(self, step: int, where: str, cause: Optional[BaseException]):
    self.step = step
    self.reason = ("another process could not read it (see that process's "
                   "log)" if cause is None else _one_line(cause))
    super().__init__(
        f"Checkpoint {where} cannot be restored ({self.reason}): it is "
        "damaged. Restore it from a good copy, or use another step.")


class NoGoodCheckpointError(RuntimeError):
  """Every step of a checkpoint folder is damaged."""


def _one_line(error: BaseException, limit: int = 300) -> str:
  """`Type: message`, first line, at most `limit` characters."""
  text = str(error).strip().splitlines()
  line = f"{type(error).__name__}: {text[0] if text else ''}"
  return line if len(line) <= limit else line[:limit - 3] + "..."


def _host_flat(tree: Any) -> dict[str, np.ndarray]:
  """`{leaf name: host array}` of a (possibly process-spanning) tree; a
  collective in multi-process runs."""
  return {n: np.asarray(v) for n, v in
          layout.flat_leaves(distributed.gather(tree)).items()}


def _shape_problems(saved: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                    abstract: Any) -> list[str]:
  """How the saved arrays' names, shapes and dtypes differ from a tree's."""
  want = {n: (tuple(x.shape), np.dtype(x.dtype))
          for n, x in layout.flat_leaves(abstract).items()}
  problems = [f"{n}: not in the checkpoint" for n in sorted(set(want) -
                                                            set(saved))]
  problems += [f"{n}: not in this model" for n in sorted(set(saved) -
                                                          set(want))]
  problems += [f"{n}: checkpoint {saved[n]} vs now {want[n]}"
               for n in sorted(set(saved) & set(want)) if saved[n] != want[n]]
  return problems


def frozen_base_record(frozen: Any, path: Optional[str],
                       fingerprint: Optional[str] = None) -> dict[str, Any]:
  """JSON-able description of the frozen parameters: the initial
  checkpoint's path and content fingerprint
  (`sharded.CheckpointRecord.content_fingerprint`; None for a random
  initialisation) and every parameter's shape."""
  return {
      "path": None if path is None else os.fspath(path),
      "fingerprint": fingerprint,
      "shapes": {name: list(np.shape(leaf)) for name, leaf in
                 param_tree.flatten_params(frozen).items()},
  }


def check_frozen_base(recorded: Mapping[str, Any],
                      current: Mapping[str, Any]) -> None:
  """Raises `FrozenBaseMismatchError` if the frozen shapes or the initial
  checkpoint's content fingerprints differ (a record written before
  fingerprints were recorded has none: a warning, nothing to compare)."""
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
  if "fingerprint" not in recorded:
    _log.warning(
        "The checkpoint's record of its frozen base (%s) has no content "
        "fingerprint (written by an earlier version): whether %s holds the "
        "same weights cannot be checked.", recorded.get("path"),
        current.get("path"))
  elif recorded["fingerprint"] != current.get("fingerprint"):
    def described(record: Mapping[str, Any]) -> str:
      if record.get("fingerprint") is None:
        return f"a random initialisation (path {record.get('path')})"
      return (f"{record.get('path')} with content fingerprint "
              f"{record['fingerprint']}")
    raise FrozenBaseMismatchError(
        f"This checkpoint was trained on the frozen model "
        f"{described(recorded)}, but the one restored now is "
        f"{described(current)}: the same parameter shapes, other weights."
        " Use an INITIAL_CHECKPOINT_PATH with the same contents as the run "
        "that wrote it (restore that checkpoint), or a new MODEL_DIR.")


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

  Saving is idempotent: a step already there with the same content (the
  recorded checksums, data position and metrics, and it restores and
  matches them) is left as it is, one
  with other content is replaced (written under `layout.staging_dir`, then
  swapped in). Restoring the latest step falls back past damaged steps
  (moving them aside) to the newest good one.

  Multi-process runs: every process calls `save` and `restore` (orbax
  writes and reads together; the checksums need every process's shards,
  gathered to each host, so the trees must be small enough for that:
  prompts, heads, optimizer state; a saved frozen base is gathered whole).
  Every process verifies the whole gathered tree, so all reach the same
  verdict; whether a step could be read at all is agreed by a collective;
  only process 0 moves or renames step folders, the others wait for it and
  re-scan the folder.

  Attributes:
    directory: where step folders go.
    keep: how many recent checkpoints to keep.
    save_frozen: also save the frozen parameters (full fine-tuning).
  """

  def __init__(self, model_dir: str, *, keep: int = 3,
               save_frozen: bool = False, subdir: str = layout.CHECKPOINTS,
               best_metric: Optional[str] = None, best_mode: str = "max"):
    self.model_dir, self.subdir = os.fspath(model_dir), subdir
    self.directory = layout.checkpoints_dir(model_dir, subdir)
    self.save_frozen = save_frozen
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        enable_async_checkpointing=False,
        best_fn=(None if best_metric is None else
                 lambda metrics: float(metrics[best_metric])),
        best_mode=best_mode,
        keep_checkpoints_without_metrics=best_metric is None)
    if distributed.is_primary():
      for move in layout.finish_swap(model_dir, subdir):
        _log.warning("Finished a checkpoint replacement a kill interrupted: "
                     "%s.", move)
    distributed.barrier("checkpoint_swap_finished")
    self._manager = self._new_manager(self.directory)

  def _new_manager(self, directory: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(directory, options=self._options,
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
    """Writes a checkpoint for `state.step` (see the class doc for a step
    that exists already); returns the step. All processes call it."""
    step = int(jax.device_get(state.step))
    tree = self._saved_tree(state)
    meta = {"data_position": int(data_position),
            "trainable_patterns": list(trainable_patterns),
            "frozen_base": dict(frozen_record),
            "metrics": None if metrics is None else
                       {k: float(v) for k, v in metrics.items()},
            layout.CHECKSUMS: layout.host_checksums(_host_flat(tree))}
    args = ocp.args.Composite(**{
        layout.STATE: ocp.args.StandardSave(tree),
        layout.META: ocp.args.JsonSave(meta)})
    if step not in self.all_steps():
      self._manager.save(step, args=args, metrics=meta["metrics"],
                         force=True)
      self._manager.wait_until_finished()
    elif (distributed.agree(self._same_content(step, meta)) and
          self._intact(state, step)):
      _log.info("Checkpoint step %d in %s is already saved with the same "
                "content; not saving it again.", step, self.directory)
    else:
      _log.warning("Checkpoint step %d in %s exists with other content "
                   "(or unreadable); replacing it.", step, self.directory)
      self._replace(step, args, meta["metrics"])
    return step

  def _same_content(self, step: int, meta: Mapping[str, Any]) -> bool:
    """Whether `step`'s recorded checksums, data position and metrics are
    `meta`'s (False when they cannot be read or there are no checksums)."""
    try:
      old = layout.read_meta(self.model_dir, step, self.subdir)
    except integrity.ChecksumMismatchError:
      return False
    keys = (layout.CHECKSUMS, "data_position", "metrics")
    return bool(old and old.get(layout.CHECKSUMS) and
                all(old.get(k) == meta[k] for k in keys))

  def _intact(self, template: TrainState, step: int) -> bool:
    """Whether `step` restores and matches its recorded checksums (the
    same verdict on every process)."""
    try:
      self._restore_step(template, step, None)
    except (DamagedCheckpointError, CheckpointMismatchError):
      return False
    return True

  def _replace(self, step: int, args: Any,
               metrics: Optional[Mapping[str, float]]) -> None:
    """Writes `step` under the staging folder, then swaps it in for the
    existing one (`layout.swap_in`): there is a complete copy of the step
    at every moment."""
    staging = layout.staging_dir(self.model_dir, self.subdir)
    manager = self._new_manager(staging)
    try:
      manager.save(step, args=args, metrics=metrics, force=True)
      manager.wait_until_finished()
    except BaseException:
      manager.close()
      if distributed.is_primary():
        shutil.rmtree(staging, ignore_errors=True)
      raise
    manager.close()
    if distributed.is_primary():
      layout.swap_in(self.model_dir, step, self.subdir)
    distributed.barrier("checkpoint_replaced")
    self._manager.reload()

  def restore(self, template: TrainState, step: Optional[int] = None, *,
              frozen_record: Optional[Mapping[str, Any]] = None,
              set_aside: bool = True) -> Restored:
    """Restores into the shapes and shardings of `template`.

    Without `step`, the newest step that restores and matches its
    checksums is used: newer steps that fail (an unreadable or missing
    file or item, a checksum mismatch) are logged and moved aside
    (`layout.set_aside`) once a good one is found (left in place with
    `set_aside=False`, for readers such as evaluation that must not change
    a run's folder). Nothing is moved when no step is good. A mismatch
    with this model (other shapes, another frozen base) is a setting
    error, raised at once.

    Args:
      template: a state (arrays or `ShapeDtypeStruct`s with shardings)
        whose frozen half is kept unless the checkpoint saved it.
      step: which step; default the latest good one.
      frozen_record: the current frozen base, checked against the saved one.
      set_aside: move the damaged steps found on the way aside.

    Raises:
      FileNotFoundError: no checkpoint at all.
      DamagedCheckpointError: `step` is damaged; `NoGoodCheckpointError`
        without `step` when every step is.
      CheckpointMismatchError, FrozenBaseMismatchError: see above.
    """
    if step is not None:
      return self._restore_step(template, int(step), frozen_record)
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    damaged: list[DamagedCheckpointError] = []
    for candidate in steps:
      try:
        restored = self._restore_step(template, candidate, frozen_record)
      except DamagedCheckpointError as e:
        damaged.append(e)
        continue
      self._set_aside(damaged, candidate, move=set_aside)
      return restored
    raise NoGoodCheckpointError(
        f"No checkpoint in {self.directory} can be restored: " +
        "; ".join(f"step {e.step}: {e.reason}" for e in damaged) +
        ". Nothing was moved. Restore the steps from a good copy, or move "
        f"them out of {self.directory} to start the run afresh.")

  def _set_aside(self, damaged: Sequence[DamagedCheckpointError],
                 good: int, move: bool = True) -> None:
    """Logs the damaged steps; with `move`, moves them aside (process 0)
    and re-scans the folder."""
    for e in damaged:
      where = (f"{layout.bad_steps_dir(self.model_dir, self.subdir)}/ "
               "by process 0")
      if not move:
        where = "nowhere (left in place)"
      elif distributed.is_primary():
        try:
          where = layout.set_aside(self.model_dir, e.step, self.subdir)
        except OSError as move_error:
          where = f"nowhere (it could not be moved: {move_error})"
      _log.warning("Checkpoint step %d in %s could not be restored (%s); "
                   "moved it to %s and resuming from step %d.", e.step,
                   self.directory, e.reason, where, good)
    if damaged and move:
      distributed.barrier("checkpoint_set_aside")
      self._manager.reload()

  def _restore_step(self, template: TrainState, step: int,
                    frozen_record: Optional[Mapping[str, Any]]) -> Restored:
    """Restores one step; raises `DamagedCheckpointError` on damage."""
    where = os.path.join(self.directory, str(step))
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=getattr(x, "sharding", None)),
        self._saved_tree(template))
    meta, tree, problems, error = None, None, [], None
    try:  # Every read, on every process; the verdict is agreed below.
      meta = dict(self._manager.restore(step, args=ocp.args.Composite(
          **{layout.META: ocp.args.JsonRestore()}))[layout.META])
      problems = _shape_problems(
          layout.state_shapes(os.path.join(where, layout.STATE)), abstract)
      if not problems:
        tree = self._manager.restore(step, args=ocp.args.Composite(**{
            layout.STATE: ocp.args.StandardRestore(abstract, strict=True)
        }))[layout.STATE]
    except Exception as e:  # pylint: disable=broad-except
      error = e
    if distributed.max_over_processes([error is not None])[0]:
      raise DamagedCheckpointError(step, where, error)
    if frozen_record is not None:
      check_frozen_base(meta["frozen_base"], frozen_record)
    if problems:
      raise CheckpointMismatchError(
          f"Checkpoint {where} does not match this model's trainable "
          f"parameters or optimizer ({'; '.join(problems[:10])}). Was "
          "PROMPT_LENGTH, the prompt type or the optimizer changed? Use the "
          "run's own gin config (MODEL_DIR/config.gin) or a new MODEL_DIR.")
    recorded = meta.get(layout.CHECKSUMS)
    if recorded:
      try:
        layout.verify_checksums(_host_flat(tree), recorded, where)
      except integrity.ChecksumMismatchError as e:
        raise DamagedCheckpointError(step, where, e) from e
    state = template.replace(step=tree[layout.STEP],
                             trainable=tree[layout.TRAINABLE],
                             opt_state=tree[layout.OPT_STATE],
                             frozen=tree.get(layout.FROZEN, template.frozen))
    return Restored(state=state, data_position=int(meta["data_position"]),
                    meta=meta)

  def close(self) -> None:
    self._manager.close()
