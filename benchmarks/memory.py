"""Process memory readings shared by the benchmarks (standard library only,
so both our JAX benchmark and the PEFT peer, in its own venv, import it)."""

import os
import resource
import sys
import threading


def peak_rss_bytes() -> int:
  """This process's peak resident set size so far (Linux: KiB -> bytes)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak) * (1 if sys.platform == "darwin" else 1024)


def current_rss_bytes() -> int:
  """This process's current resident set size (Linux, via /proc)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    return 0


class RssSampler:
  """Samples the current RSS in a background thread; keeps the maximum."""

  def __init__(self, interval_s: float = 0.005):
    self._interval = interval_s
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self.peak = 0

  def _run(self) -> None:
    while not self._stop.is_set():
      self.peak = max(self.peak, current_rss_bytes())
      self._stop.wait(self._interval)

  def __enter__(self) -> "RssSampler":
    self.peak = current_rss_bytes()
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, current_rss_bytes())
