"""The server's Prometheus metrics (`GET /metrics`), one registry per server."""

import prometheus_client as prom

# Rows per forward pass; latency in seconds from arrival to answer.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)


class Metrics:
  """Counters, gauges and histograms of one server.

  Attributes:
    requests: `serve_requests_total{status}`, every answered predict request.
    batch_size: `serve_batch_size`, requests per forward pass.
    queue_depth: `serve_queue_depth`, requests waiting for a batch.
    latency: `serve_request_latency_seconds{mode}`, arrival to answer.
    compilations: `serve_compilations_total`, programs compiled.
  """

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    self.requests = prom.Counter(
        "serve_requests", "Predict requests answered, by HTTP status.",
        ["status"], registry=self.registry)
    self.batch_size = prom.Histogram(
        "serve_batch_size", "Requests per forward pass.",
        buckets=BATCH_BUCKETS, registry=self.registry)
    self.queue_depth = prom.Gauge(
        "serve_queue_depth", "Requests waiting for a batch.",
        registry=self.registry)
    self.latency = prom.Histogram(
        "serve_request_latency_seconds", "Arrival to answer, answered "
        "predict requests.", ["mode"], buckets=LATENCY_BUCKETS,
        registry=self.registry)
    self.compilations = prom.Counter(
        "serve_compilations", "Programs compiled (mode, bank capacity, "
        "input bucket).", registry=self.registry)

  def render(self) -> tuple[bytes, str]:
    """(the exposition text, its content type)."""
    return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST
