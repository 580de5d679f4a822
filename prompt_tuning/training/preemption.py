"""Stopping a training run cleanly on SIGTERM / SIGINT (preemption).

A preempting scheduler (SLURM, Kubernetes, a TPU maintenance event) sends
SIGTERM and, after a grace period, SIGKILL; Ctrl-C sends SIGINT. Without
help either ends the run where it stands, losing every step since the last
periodic checkpoint. `StopSignals` turns them into a request that the
training loop answers at the next step boundary:

  with preemption.StopSignals() as stop:
    for step in ...:
      ...                              # one step, its logs and checkpoint
      if stop.requested(step + 1):
        ...                            # save a checkpoint of step + 1
        break
  raise stop.preempted(step + 1, ...)  # after cleaning up

The signal handler only records which signal came; nothing else happens in
it. A second SIGTERM / SIGINT while the checkpoint is being written puts
the previous handlers back and raises `KeyboardInterrupt` (the save is
abandoned; orbax writes each checkpoint atomically, so at worst it is not
there and the run resumes from the one before). The handlers are installed
only inside the `with` block, and only on the main thread (Python allows
no other); the previous ones are restored on the way out, exceptions
included.

Multi-process runs stop at the same step on every process:

  * SIGTERM: `jax.distributed` starts JAX's preemption service (unless
    `jax_enable_preemption_service` is off), whose own handler catches
    SIGTERM on any process and agrees a step with all of them;
    `multihost_utils.reached_preemption_sync_point(step)` is asked at every
    step (a local check, microseconds). No Python handler is installed for
    SIGTERM then: it would take the signal away from the service;
  * SIGINT (and SIGTERM with the service off): each process's flag is
    combined with the others' (maximum over processes) every
    `AGREE_EVERY` steps, a tiny collective (a few milliseconds on CPU);
    the stop comes at the next such step.

After the checkpoint of a multi-process run, `jax.distributed` is shut
down on every process (the process is expected to exit).

`Preempted`, raised once the checkpoint is written, is a `SystemExit` whose
code is 128 + the signal number (143 for SIGTERM, 130 for SIGINT): what a
process killed by that signal reports, so a scheduler sees an interrupted
run, not a finished one (a Kubernetes Job would count exit code 0 as
success; a SLURM requeue script can test for 143), and `except Exception`
handlers do not swallow it.
"""

import logging
import signal
import threading
import types
from typing import Any, Callable, Optional, Union

import jax
from jax.experimental import multihost_utils
import numpy as np

_log = logging.getLogger(__name__)

# Steps between the multi-process agreements on local flags (SIGINT, or
# SIGTERM without JAX's preemption service).
AGREE_EVERY = 10

_Handler = Union[Callable[[int, Optional[types.FrameType]], Any], int, None]


class Preempted(SystemExit):
  """The run stopped on a signal after writing a checkpoint of `step`.

  `code` (the exit status it gives) is 128 + `signum`.

  Attributes:
    step: the step the run stopped at (its checkpoint is written).
    signum: the signal, e.g. `signal.SIGTERM`.
    message: what happened and how to resume.
  """

  def __init__(self, step: int, signum: int, message: str):
    super().__init__(128 + int(signum))
    self.step, self.signum, self.message = step, int(signum), message

  def __str__(self) -> str:
    return self.message


def signal_name(signum: int) -> str:
  """'SIGTERM' for `signal.SIGTERM`, etc."""
  try:
    return signal.Signals(signum).name
  except ValueError:
    return f"signal {signum}"


def preemption_service_active() -> bool:
  """Whether JAX's preemption service runs in this (multi-process) run:
  it then owns SIGTERM and agrees a stopping step itself."""
  return (jax.process_count() > 1 and jax.distributed.is_initialized() and
          bool(jax.config.jax_enable_preemption_service))


class StopSignals:
  """Records SIGTERM / SIGINT inside a `with` block; see the module doc.

  Attributes:
    signum: the first signal received on this process (None: none yet).
  """

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,
                                                 signal.SIGINT),
               agree_every: Optional[int] = None):
    self.signals = tuple(signals)
    self.agree_every = AGREE_EVERY if agree_every is None else agree_every
    self.signum: Optional[int] = None
    self._previous: dict[int, _Handler] = {}
    self._multi = False
    self._service = False
    self._agreed: Optional[int] = None

  def __enter__(self) -> "StopSignals":
    self.install()
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.restore()

  def install(self) -> None:
    """Installs the handlers (the `with` block does it); call `restore`
    after, also on exceptions."""
    self._multi = jax.process_count() > 1
    self._service = preemption_service_active()
    if threading.current_thread() is not threading.main_thread():
      _log.debug("Not on the main thread: SIGTERM / SIGINT will not save a "
                 "checkpoint before the run ends.")
      return
    for signum in self.signals:
      if signum == signal.SIGTERM and self._service:
        continue  # JAX's preemption service catches it (module doc).
      self._previous[signum] = signal.getsignal(signum)
      signal.signal(signum, self._handle)

  def restore(self) -> None:
    """Puts the previous handlers back (again: nothing to do)."""
    previous, self._previous = self._previous, {}
    for signum, handler in previous.items():
      # None: installed outside Python; the default is the best we can do.
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)

  def _handle(self, signum: int, frame: Optional[types.FrameType]) -> None:
    del frame
    if self.signum is None:
      self.signum = signum
      return
    # A second signal: stop waiting for the checkpoint.
    self.restore()
    raise KeyboardInterrupt(f"{signal_name(signum)} received again while "
                            "stopping")

  def requested(self, step: int) -> bool:
    """Whether to stop after `step` (a step boundary); every process must
    call it at every step, and gets the same answer."""
    if not self._multi:
      if self.signum is not None:
        self._agreed = self.signum
      return self._agreed is not None
    stop = None
    if self._service and multihost_utils.reached_preemption_sync_point(step):
      stop = signal.SIGTERM
    if self.agree_every > 0 and step % self.agree_every == 0:
      flags = multihost_utils.process_allgather(
          np.int32(self.signum or 0))
      seen = int(np.max(np.asarray(flags)))
      stop = stop or (seen or None)
    if stop is not None:
      self._agreed = int(stop)
    return self._agreed is not None

  def preempted(self, step: int, directory: str) -> Preempted:
    """The exception that ends a run stopped at `step`, whose checkpoint
    is in `directory`; logs its message (as a warning)."""
    signum = self._agreed or self.signum or signal.SIGTERM
    name = signal_name(signum)
    message = (
        f"Training stopped by {name} at step {step}; its checkpoint is "
        f"{directory}/{step}. To resume, re-run the same command with the "
        f"same MODEL_DIR (exit code {128 + signum}).")
    _log.warning("%s", message)
    if self._multi:
      # Every process is here at the same step. Left to process exit, the
      # coordinator (process 0) may go first and the others then abort on
      # its lost connection; shutting down together lets them all exit.
      jax.distributed.shutdown()
    return Preempted(step, signum, message)
