"""The network probe: a deadline that holds, open vs closed ports, proxies."""

import socket
import threading
import time

from prompt_tuning.data import network

# A probe must give up quickly; leave room for a loaded test machine.
FAST_S = 5.0


def listening_socket() -> socket.socket:
  """A local server socket that accepts connections."""
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(8)
  return server


def closed_port() -> int:
  """A local port nothing listens on."""
  probe = socket.socket()
  probe.bind(("127.0.0.1", 0))
  port = probe.getsockname()[1]
  probe.close()
  return port


def test_probe_deadline_holds_when_connect_hangs(monkeypatch):
  def hang(*args, **kwargs):
    del args, kwargs
    time.sleep(5)  # Like a name lookup that never answers in time.
    raise OSError("answered too late")

  monkeypatch.setattr(network.socket, "create_connection", hang)
  start = time.monotonic()
  failures = network.unreachable_hosts(["a.invalid", "b.invalid:80"],
                                      timeout_s=0.5)
  assert time.monotonic() - start < 2
  assert set(failures) == {"a.invalid", "b.invalid:80"}
  assert "no answer within 0.5 s" in failures["a.invalid"]


def test_probe_tells_open_from_closed_ports():
  server = listening_socket()
  try:
    port = server.getsockname()[1]
    assert network.unreachable_hosts([f"127.0.0.1:{port}"]) == {}
  finally:
    server.close()
  closed = f"127.0.0.1:{closed_port()}"
  assert "ConnectionRefusedError" in network.unreachable_hosts([closed])[closed]


def _fake_proxy(status_line: bytes):
  """A one-request HTTPS proxy that answers CONNECT with `status_line`."""
  server = listening_socket()

  def serve():
    connection, _ = server.accept()
    with connection:
      request = connection.recv(1024)
      if request.startswith(b"CONNECT "):
        connection.sendall(status_line + b"\r\n\r\n")

  threading.Thread(target=serve, daemon=True).start()
  return server


def test_probe_goes_through_the_https_proxy(monkeypatch):
  for variable in ("no_proxy", "NO_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                   "all_proxy"):
    monkeypatch.delenv(variable, raising=False)
  for status, reachable in ((b"HTTP/1.1 200 Connection established", True),
                            (b"HTTP/1.1 403 Forbidden", False)):
    server = _fake_proxy(status)
    try:
      monkeypatch.setenv("https_proxy",
                         "http://127.0.0.1:%d" % server.getsockname()[1])
      failures = network.unreachable_hosts(["dl.fbaipublicfiles.com"])
    finally:
      server.close()
    assert (failures == {}) == reachable, failures
    if not reachable:
      assert "403" in failures["dl.fbaipublicfiles.com"]
