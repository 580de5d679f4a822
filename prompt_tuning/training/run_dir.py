"""What a training run's MODEL_DIR holds besides checkpoints, and one rule:
one run per directory.

  .lock               the running process's host, pid, start time and
                      command line, held with `flock` for as long as it runs
                      (the kernel drops it when the process dies, so a lock
                      left by a killed run is recognised and taken over);
  config.gin          the run's configuration, written once (atomically)
                      when the run starts fresh; a resume is compared with it
                      and refused on any difference except the few settings
                      that only say how long or how often (`RESUMABLE`);
  eval_metrics.jsonl  one JSON line per finished evaluation, so that a
                      resumed run knows which evaluations are still due,
                      and one more if early stopping ended the run
                      (`early_stop_due`, `early_stop_record`).

In a multi-process run (`distributed`) process 0 alone holds the lock and
writes these files, for all (`hold`); the others read them.

These files are opened without following symbolic links (`O_NOFOLLOW`), and
a link where one of them should be is refused before anything is loaded or
written (`check_run_files`): a run never writes outside MODEL_DIR through
them. Files written atomically (`write_atomically`, `replace_tree`) go
through a temporary file or folder beside the target that any failure
removes.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from prompt_tuning import errors
from prompt_tuning.training import distributed

_log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_FILE = "config.gin"
EVAL_RECORD_FILE = "eval_metrics.jsonl"
RUN_FILES = (LOCK_FILE, CONFIG_FILE, EVAL_RECORD_FILE)

# Bindings a resumed run may change: they say how long to train, how often
# to evaluate or checkpoint, and where the run lives, not what is trained.
# A macro, a parameter name, or `Class.field` of `training.run_settings`.
RESUMABLE = frozenset({
    "MODEL_DIR", "model_dir",
    "TRAIN_STEPS", "EVAL_PERIOD", "CHECKPOINT_PERIOD", "train_steps",
    "log_period", "progress", "EvalConfig.period", "CheckpointConfig.period",
    "CheckpointConfig.keep",
    # Early stopping says how long to train too: raising the patience
    # continues a stopped run from its final checkpoint.
    "EARLY_STOPPING_PATIENCE", "EARLY_STOPPING_MIN_DELTA",
    "EvalConfig.early_stopping_patience", "EvalConfig.early_stopping_min_delta",
})


class RunLockedError(errors.ConfigError):
  """Another live process is running in this MODEL_DIR."""


class RunConfigMismatchError(errors.ConfigError):
  """A resumed run's configuration differs from the one it started with."""


class RunFileLinkError(errors.ConfigError):
  """A file the run writes in MODEL_DIR is a symbolic link."""


def _link_message(path: str) -> str:
  try:
    target = os.readlink(path)
  except OSError:
    target = "?"
  return (f"{path} is a symbolic link (to {target}), where the run keeps a "
          "file of its own; writing it would change a file outside MODEL_DIR."
          f" Remove the link (rm {path}) or choose another MODEL_DIR.")


def check_run_files(model_dir: str) -> None:
  """Raises `RunFileLinkError` if a file the run writes in `model_dir`
  (`RUN_FILES`) is a symbolic link; reads nothing else."""
  for name in RUN_FILES:
    path = os.path.join(model_dir, name)
    if os.path.islink(path):
      raise RunFileLinkError(_link_message(path))


def _open_no_link(path: str, flags: int, mode: int = 0o644) -> int:
  """`os.open` that does not follow a symbolic link at `path`.

  Raises:
    RunFileLinkError: `path` is a symbolic link.
  """
  try:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
  except OSError as e:
    if e.errno != errno.ENOENT and os.path.islink(path):
      raise RunFileLinkError(_link_message(path)) from e
    raise


def _lock_path(model_dir: str) -> str:
  return os.path.join(model_dir, LOCK_FILE)


def _read_holder(path: str) -> dict[str, Any]:
  try:
    with os.fdopen(_open_no_link(path, os.O_RDONLY)) as f:
      return json.loads(f.read() or "{}")
  except (OSError, ValueError):
    return {}


def _locked_message(model_dir: str, holder: Mapping[str, Any]) -> str:
  who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
         f"started {holder.get('started', '?')}")
  return (f"MODEL_DIR {model_dir} is in use by another run ({who}; command: "
          f"{holder.get('command', '?')}). Wait for it to finish, stop it, or "
          "choose another MODEL_DIR. (A lock left by a process that died is "
          f"taken over automatically; lock file {_lock_path(model_dir)}.)")


def check_unlocked(model_dir: str) -> None:
  """Raises `RunLockedError` if a live run holds `model_dir`, or
  `RunFileLinkError` if one of its files is a symbolic link
  (`check_run_files`); writes nothing."""
  check_run_files(model_dir)
  path = _lock_path(model_dir)
  try:
    fd = _open_no_link(path, os.O_RDONLY)
  except FileNotFoundError:
    return
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise
    raise RunLockedError(_locked_message(model_dir, _read_holder(path))) from e
  finally:
    os.close(fd)  # Also releases the shared lock.


class RunLock:
  """Holds `model_dir` for one run: `with RunLock(model_dir): ...`.

  Creates `model_dir` if needed; on exit removes the lock file, and the
  directory too if it created it and nothing else was written there.
  """

  def __init__(self, model_dir: str):
    self.model_dir = os.path.abspath(model_dir)
    self._fd: Optional[int] = None
    self._created_dir = False

  def __enter__(self) -> "RunLock":
    check_run_files(self.model_dir)
    self._created_dir = not os.path.isdir(self.model_dir)
    os.makedirs(self.model_dir, exist_ok=True)
    path = _lock_path(self.model_dir)
    while True:
      fd = _open_no_link(path, os.O_RDWR | os.O_CREAT)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES):
          raise
        self._remove_created_dir()
        raise RunLockedError(
            _locked_message(self.model_dir, _read_holder(path))) from e
      try:
        same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
      except FileNotFoundError:
        same_file = False
      if same_file:
        break
      os.close(fd)  # The holder removed the file as we opened it; retry.
    stale = _read_holder(path)
    if stale:
      _log.warning("Taking over the lock of a run that is no longer "
                      "running (pid %s on host %s, started %s).",
                      stale.get("pid"), stale.get("host"), stale.get("started"))
    holder = {
        "host": socket.gethostname(), "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def _remove_created_dir(self) -> None:
    if self._created_dir:
      try:
        os.rmdir(self.model_dir)
      except OSError:
        pass  # Not empty: something was written, keep it.

  def __exit__(self, *exc_info) -> None:
    if self._fd is not None:
      try:
        os.unlink(_lock_path(self.model_dir))
      except FileNotFoundError:
        pass
      os.close(self._fd)
      self._fd = None
    self._remove_created_dir()


@contextlib.contextmanager
def hold(model_dir: str) -> Iterator[None]:
  """`RunLock(model_dir)` for the run, whatever its number of processes.

  In a multi-process run process 0 takes the lock and tells the others
  whether it got it (they raise `RunLockedError` if not); all processes
  meet again before it is released, so that no other run can take
  MODEL_DIR while one of them still writes there. (A process that fails
  skips that meeting; the others then stop when JAX's coordination service
  reports the lost process.)
  """
  if not distributed.is_multiprocess():
    with RunLock(model_dir):
      yield
    return
  lock, error = None, None
  if distributed.is_primary():
    try:
      lock = RunLock(model_dir).__enter__()
    except Exception as e:  # pylint: disable=broad-except  (re-raised below)
      error = e
  if not distributed.agree(error is None):
    if error is not None:
      raise error
    raise RunLockedError(
        f"Process 0 could not take the lock of MODEL_DIR {model_dir} (see its"
        " log); this process stops with it.")
  try:
    yield
    distributed.barrier("prompt_tuning:run_dir.hold")
  finally:
    if lock is not None:
      lock.__exit__(None, None, None)


def parse_bindings(config_text: str) -> dict[str, str]:
  """`NAME = value` bindings of a gin config text (as `gin.config_str()`
  writes it), values whitespace-normalised; imports and comments skipped."""
  bindings: dict[str, str] = {}
  name, value, depth = None, "", 0
  for line in config_text.splitlines():
    stripped = line.strip()
    if name is not None and (depth > 0 or (line[:1].isspace() and stripped)):
      value += " " + stripped
    else:
      if name is not None:
        bindings[name] = " ".join(value.split())
        name = None
      if (not stripped or stripped.startswith("#") or
          stripped.startswith(("import ", "from ", "include "))):
        continue
      if "=" not in stripped:
        continue
      name, value = (s.strip() for s in stripped.split("=", 1))
      depth = 0
    depth = (value.count("(") + value.count("[") + value.count("{") -
             value.count(")") - value.count("]") - value.count("}"))
  if name is not None:
    bindings[name] = " ".join(value.split())
  return bindings


def config_differences(recorded: str, current: str) -> list[str]:
  """Bindings that differ between two config texts, except `RESUMABLE`."""
  old, new = parse_bindings(recorded), parse_bindings(current)
  out = []
  for key in sorted(set(old) | set(new)):
    name = key.rsplit("/", 1)[-1].split(".")
    if (name[-1] in RESUMABLE or ".".join(name[-2:]) in RESUMABLE or
        old.get(key) == new.get(key)):
      continue
    out.append(f"{key}: {old.get(key, '(unset)')} in config.gin, "
               f"{new.get(key, '(unset)')} now")
  return out


def check_run_config(model_dir: str, run_config: Optional[str],
                     has_checkpoint: bool) -> None:
  """Refuses to resume a run under another configuration; reads only.

  Args:
    model_dir: the run's directory.
    run_config: this run's config text; None skips the check.
    has_checkpoint: whether `model_dir` holds a checkpoint to resume.

  Raises:
    RunConfigMismatchError: naming every differing binding.
  """
  path = os.path.join(model_dir, CONFIG_FILE)
  if run_config is None or not has_checkpoint or not os.path.exists(path):
    return
  with os.fdopen(_open_no_link(path, os.O_RDONLY)) as f:
    differences = config_differences(f.read(), run_config)
  if differences:
    raise RunConfigMismatchError(
        f"MODEL_DIR {model_dir} holds a run with another configuration "
        f"(recorded in {path}); resuming it with this one would mix two "
        "experiments. Differing bindings: " + "; ".join(differences) +
        ". Re-run with the recorded settings, or use a new MODEL_DIR.")


def record_config(model_dir: str, run_config: Optional[str],
                  has_checkpoint: bool) -> None:
  """Writes `config.gin` atomically when the run starts fresh (no
  checkpoint yet) or has none recorded; a resumed run's record is kept.
  Only process 0 writes."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if (run_config is None or not distributed.is_primary() or
      (has_checkpoint and os.path.exists(path))):
    return
  write_atomically(path, run_config)


def _sync_dir(directory: str) -> None:
  """fsyncs a directory, so that a rename in it survives a power cut (where
  the system allows it)."""
  try:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _umask() -> int:
  """The process's umask, read from /proc where it can be (setting it to
  read it races other threads); 0o022 elsewhere."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  return 0o022


def write_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` through a synced temporary file beside it,
  renamed over it: a kill leaves the old file or the new one, never a part,
  and any failure (a full disk) removes the temporary file.

  Raises:
    RunFileLinkError: `path` is a symbolic link (it is not replaced, nor
      its target written).
  """
  directory = os.path.dirname(path) or "."
  if os.path.islink(path):
    raise RunFileLinkError(_link_message(path))
  fd, tmp = tempfile.mkstemp(dir=directory,
                             prefix=f".{os.path.basename(path)}.")
  try:
    with os.fdopen(fd, "w") as f:
      os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's is 0o600.
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    if os.path.islink(path):
      raise RunFileLinkError(_link_message(path))
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise
  _sync_dir(directory)


def remove_partial_trees(target: str) -> list[str]:
  """Removes the temporary folders `replace_tree` left beside `target` when
  a kill cut it short; returns their paths."""
  parent, name = os.path.split(os.path.abspath(target))
  removed = []
  if not os.path.isdir(parent):
    return removed
  for entry in os.listdir(parent):
    if entry.startswith((f".{name}.partial", f".{name}.old")):
      path = os.path.join(parent, entry)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
  return removed


def replace_tree(target: str, fill: Callable[[str], None],
                 verify: Optional[Callable[[str], None]] = None) -> None:
  """Makes the folder `target` atomically: `fill(tmp)` writes its contents
  into a new temporary folder beside it (`.<name>.partial-*`), `verify(tmp)`
  checks them (raising if wrong), and only then does it replace `target`.

  A kill at any point leaves either no `target` or a complete one, plus
  temporary folders that the next call removes first
  (`remove_partial_trees`); any failure removes its temporary folder.
  """
  target = os.path.abspath(target)
  parent, name = os.path.split(target)
  os.makedirs(parent, exist_ok=True)
  for path in remove_partial_trees(target):
    _log.info("Removed %s, left by a copy that was cut short.", path)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.partial-")
  old = None
  try:
    fill(tmp)
    if verify is not None:
      verify(tmp)
    _sync_tree(tmp)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's is 0o700.
    if os.path.lexists(target):  # Set aside, so that the rename is atomic.
      old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.old-")
      os.replace(target, os.path.join(old, name))
    os.replace(tmp, target)
    _sync_dir(parent)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    if old is not None and not os.path.lexists(target):
      os.replace(os.path.join(old, name), target)  # Put the old one back.
    raise
  finally:
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)


def _sync_tree(directory: str) -> None:
  """fsyncs every file and folder under `directory`."""
  for root, _, files in os.walk(directory):
    for name in files:
      fd = os.open(os.path.join(root, name), os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
    _sync_dir(root)


def metric_key(task: str, metric: str) -> str:
  """`task/metric`: a task's metric as `eval_metrics.jsonl`, TensorBoard and
  BEST_METRIC name it."""
  return f"{task}/{metric}"


def _all_records(model_dir: str) -> list[dict[str, Any]]:
  """Every complete line of `eval_metrics.jsonl`, in the order written."""
  path = os.path.join(model_dir, EVAL_RECORD_FILE)
  records = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
          record["step"] = int(record["step"])
        except (ValueError, KeyError, TypeError):
          continue  # A line cut short by a kill.
        records.append(record)
  return records


def eval_records(model_dir: str) -> list[dict[str, Any]]:
  """Every finished evaluation in `eval_metrics.jsonl`: `{"step", metric
  keys ("task/metric") ...}`, in the order written (early stopping's record
  left out: `early_stop_record`)."""
  return [r for r in _all_records(model_dir) if not r.get(EARLY_STOPPED)]


def evaluated_steps(model_dir: str) -> set[int]:
  """Steps with a finished evaluation recorded in `eval_metrics.jsonl`."""
  return {record["step"] for record in eval_records(model_dir)}


def _append_record(model_dir: str, record: Mapping[str, Any]) -> None:
  """Appends `record` as a JSON line, synced to disk (by process 0 only)."""
  if not distributed.is_primary():
    return
  path = os.path.join(model_dir, EVAL_RECORD_FILE)
  with os.fdopen(_open_no_link(path, os.O_RDWR | os.O_CREAT | os.O_APPEND),
                 "a+b") as f:
    f.seek(0, os.SEEK_END)
    if f.tell():
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":
        f.write(b"\n")  # End a line cut short by a kill.
    f.write((json.dumps(dict(record)) + "\n").encode())
    f.flush()
    os.fsync(f.fileno())


def record_eval(model_dir: str, step: int, metrics: Mapping[str, Any]) -> None:
  """Appends one evaluation's metrics as a JSON line, synced to disk (by
  process 0 only)."""
  _append_record(model_dir, {"step": int(step), **metrics})


# Early stopping's record in eval_metrics.jsonl: {EARLY_STOPPED: true, "step",
# "metric", "best_step", "best", "patience", "min_delta"}.
EARLY_STOPPED = "early_stopped"


def early_stop_due(records: Sequence[Mapping[str, Any]], step: int, *,
                   metric: str, patience: int,
                   min_delta: float) -> Optional[dict[str, Any]]:
  """Whether the evaluations recorded up to `step` end the run.

  The records (`eval_records`, plus any not yet written) are taken by step,
  the last of a step's records counting (an evaluation re-run after a
  kill); those without `metric` are skipped. An evaluation improves when its
  value exceeds the best so far by more than `min_delta` (the first one
  always does, unless NaN); `patience` evaluations in a row without one end
  the run.

  Returns:
    None, or the record to write: `{EARLY_STOPPED: True, "step": step,
    "metric", "best_step" (the last improvement), "best" (its value),
    "patience", "min_delta", "evaluations_without_improvement"}`.
  """
  by_step = {int(r["step"]): r for r in records
             if int(r["step"]) <= step and metric in r}
  best, best_step, waited = None, None, 0
  for at in sorted(by_step):
    value = float(by_step[at][metric])
    if value == value and (best is None or value > best + min_delta):
      best, best_step, waited = value, at, 0
    else:
      waited += 1
  if waited < patience:
    return None
  return {EARLY_STOPPED: True, "step": int(step), "metric": metric,
          "best_step": best_step, "best": best, "patience": patience,
          "min_delta": min_delta, "evaluations_without_improvement": waited}


def early_stop_record(model_dir: str) -> Optional[dict[str, Any]]:
  """The last early-stopping record in `eval_metrics.jsonl`, if any."""
  stops = [r for r in _all_records(model_dir) if r.get(EARLY_STOPPED)]
  return stops[-1] if stops else None


def record_early_stop(model_dir: str, record: Mapping[str, Any]) -> None:
  """Appends early stopping's record (`early_stop_due`), synced to disk (by
  process 0 only)."""
  _append_record(model_dir, record)
