"""Whether remote data hosts answer, within seconds, and the offline switch.

The pre-flight checks (`availability`, `vocab.check_vocabulary`) never
download anything; where data would have to come over the network they only
ask whether its host answers a short TCP connect (`unreachable_hosts`, via
the environment's HTTPS proxy as a download would). With
`PROMPT_TUNING_OFFLINE=1` (`OFFLINE_ENV`) no probe is made and whatever needs
the network fails at once.

Failures a user fixes by pointing a setting elsewhere raise
`DataUnavailableError`, whose message names the problem and the setting.
"""

import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from typing import Iterable, Optional, Sequence

from prompt_tuning import errors

OFFLINE_ENV = "PROMPT_TUNING_OFFLINE"
PROBE_TIMEOUT_S = 3.0

# Where remote file systems live, for the connect probe.
_REMOTE_HOSTS = {
    "gs": "storage.googleapis.com",
    "s3": "s3.amazonaws.com",
}
_TRUE_STRINGS = ("1", "true", "yes", "on")


class DataUnavailableError(errors.ConfigError, RuntimeError):
  """Data or vocabulary cannot be read here; the message says how to fix it."""


def offline() -> bool:
  """Whether `PROMPT_TUNING_OFFLINE` forbids network probes (and downloads)."""
  return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE_STRINGS


def _split_host(address: str) -> tuple[str, int]:
  """`host` or `host:port` (default 443) -> (host, port)."""
  host, sep, port = address.rpartition(":")
  if sep and port.isdigit() and "]" not in port:
    return host.strip("[]"), int(port)
  return address.strip("[]"), 443


def _proxy_for(host: str) -> Optional[tuple[str, int]]:
  """The HTTPS proxy a download to `host` would go through, if any."""
  proxy = urllib.request.getproxies().get("https")
  if not proxy or urllib.request.proxy_bypass(host):
    return None
  parsed = urllib.parse.urlparse(proxy if "://" in proxy else
                                 f"http://{proxy}")
  if not parsed.hostname:
    return None
  return parsed.hostname, parsed.port or 80


def _connect(host: str, port: int, timeout_s: float) -> None:
  """Opens (and closes) a TCP connection to host:port, maybe via a proxy.

  Raises:
    OSError: the host (or the proxy's tunnel to it) cannot be reached.
  """
  proxy = _proxy_for(host)
  if proxy is None:
    socket.create_connection((host, port), timeout=timeout_s).close()
    return
  with socket.create_connection(proxy, timeout=timeout_s) as sock:
    sock.settimeout(timeout_s)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}"
                 "\r\n\r\n".encode("ascii"))
    status = sock.recv(1024).split(b"\r\n", 1)[0].decode("latin-1")
  parts = status.split()
  code = parts[1] if len(parts) > 1 else ""
  # 407: the proxy wants credentials, which the download client may have.
  if not (code.startswith("2") or code == "407"):
    raise OSError(f"proxy {proxy[0]}:{proxy[1]} answered {status!r} to "
                  f"CONNECT {host}:{port}")


def unreachable_hosts(hosts: Iterable[str],
                      timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, str]:
  """Probes hosts in parallel with a TCP connect; returns the failures.

  The whole probe takes at most about `timeout_s`, also when name resolution
  hangs (each connect runs in a daemon thread that is abandoned at the
  deadline). An HTTPS proxy from the environment is used as downloads would.

  Args:
    hosts: `host` or `host:port` (port 443 by default).
    timeout_s: the deadline for all probes together.

  Returns:
    `{host: reason}` for each host that did not answer; empty if all did.
  """
  hosts = list(dict.fromkeys(hosts))
  results: dict[str, Optional[str]] = {}

  def probe(address: str) -> None:
    try:
      _connect(*_split_host(address), timeout_s)
      results[address] = None
    except Exception as e:  # pylint: disable=broad-except
      # Any failure means "not reachable"; a probe thread never raises.
      results[address] = f"{type(e).__name__}: {e}"

  threads = []
  for address in hosts:
    thread = threading.Thread(target=probe, args=(address,), daemon=True,
                              name=f"probe-{address}")
    thread.start()
    threads.append(thread)
  deadline = time.monotonic() + timeout_s
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  answered = dict(results)  # Late answers are ignored.
  failures = {}
  for address in hosts:
    if address not in answered:
      failures[address] = f"no answer within {timeout_s:g} s"
    elif answered[address] is not None:
      failures[address] = answered[address]
  return failures


def remote_host(path: str) -> Optional[str]:
  """The host behind a remote path (`gs://b/x` -> GCS), None if local."""
  if "://" not in path:
    return None
  parsed = urllib.parse.urlparse(path)
  scheme = parsed.scheme.lower()
  if scheme in ("", "file"):
    return None
  if scheme in _REMOTE_HOSTS:
    return _REMOTE_HOSTS[scheme]
  if parsed.hostname:
    port = parsed.port or (80 if scheme == "http" else 443)
    return parsed.hostname if port == 443 else f"{parsed.hostname}:{port}"
  return None


def require_network(hosts: Sequence[str], what: str, fix: str,
                    probed: Optional[dict[str, Optional[str]]] = None
                    ) -> None:
  """Raises DataUnavailableError unless offline is off and all hosts answer.

  Args:
    hosts: to probe.
    what: the first part of the error message.
    fix: the last part, what to set instead.
    probed: earlier results (`{host: reason or None}`) to reuse and extend,
      so that a mixture probes each host once.
  """
  if offline():
    raise DataUnavailableError(
        f"{what}, and {OFFLINE_ENV}=1 forbids the network ({', '.join(hosts)} "
        f"not probed). {fix}")
  probed = {} if probed is None else probed
  new = [h for h in hosts if h not in probed]
  if new:
    found = unreachable_hosts(new)
    probed.update({h: found.get(h) for h in new})
  failures = {h: probed[h] for h in hosts if probed[h] is not None}
  if failures:
    reasons = "; ".join(f"{h}: {r}" for h, r in failures.items())
    raise DataUnavailableError(
        f"{what}, and the network cannot reach it ({reasons}). {fix}")
