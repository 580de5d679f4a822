"""Dynamic batching across tasks: a bounded queue and one batcher task.

Requests wait in a bounded queue on the event loop. The batcher takes the
oldest request and gathers every waiting request that can share its forward
pass (same mode: greedy, beam k or rank; any task, since each row carries
its prompt's slot), until the batch is full or `max_wait_s` has passed since
the oldest arrived. A lone request therefore waits at most `max_wait_s`, and
a burst fills whole batches. The batch runs on a single worker thread (the
model is not re-entrant, and the loop keeps accepting meanwhile); each
request's future gets its answer, or its error.

A request whose caller gave up (deadline, disconnect) is marked done by its
caller and skipped when its turn comes; every accepted request is answered
exactly once, by whoever resolves its future first.
"""

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
from typing import Any, Optional

import numpy as np

from prompt_tuning.serving_http import codec as codec_lib
from prompt_tuning.serving_http import engine as engine_lib
from prompt_tuning.serving_http import metrics as metrics_lib

_LOG = logging.getLogger(__name__)
MIXED, PER_TASK = "mixed", "per_task"


@dataclasses.dataclass(eq=False)
class Work:
  """One accepted request.

  Attributes:
    codec: its task's codec.
    encoded: its encoder ids and example.
    mode: `engine.GREEDY`, `BEAM` or `RANK`.
    num_beams: beams (1 unless `BEAM`).
    future: resolved with the answer dict or an exception.
    arrival: loop time it was accepted.
  """
  codec: codec_lib.TaskCodec
  encoded: codec_lib.Encoded
  mode: str
  num_beams: int
  future: asyncio.Future
  arrival: float


class Batcher:
  """Forms batches from the queue and runs them on the engine's thread.

  Attributes:
    engine: the model runner.
    max_queue: requests that may wait; one more is refused (`submit`).
    max_wait_s: the longest the oldest request waits for company.
    batching: `MIXED` (tasks share batches) or `PER_TASK` (one task per
      batch, for comparison).
    draining: set at shutdown: no new request is accepted.
  """

  def __init__(self, engine: engine_lib.Engine, metrics: metrics_lib.Metrics,
               max_queue: int, max_wait_s: float, batching: str = MIXED):
    if batching not in (MIXED, PER_TASK):
      raise ValueError(f"batching {batching!r}: use {MIXED!r} or "
                       f"{PER_TASK!r}.")
    if max_queue < 1:
      raise ValueError(f"max_queue must be at least 1, got {max_queue}.")
    self.engine = engine
    self.metrics = metrics
    self.max_queue = max_queue
    self.max_wait_s = max_wait_s
    self.batching = batching
    self.draining = False
    self._pending: collections.deque[Work] = collections.deque()
    self._arrived: Optional[asyncio.Event] = None
    self._task: Optional[asyncio.Task] = None
    self._worker = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="serve-model")

  # Life cycle (on the event loop).

  def start(self) -> None:
    self._arrived = asyncio.Event()
    self._task = asyncio.get_running_loop().create_task(self._run())

  async def drain(self) -> None:
    """Stops accepting, answers everything accepted, then stops."""
    self.draining = True
    if self._task is not None:
      self._arrived.set()
      await self._task
    self._worker.shutdown(wait=True)

  def submit(self, work: Work) -> None:
    """Queues `work`; ApiError 503 when draining or the queue is full."""
    if self.draining:
      raise codec_lib.ApiError(503, "The server is shutting down; send the "
                               "request to another replica.")
    if len(self._pending) >= self.max_queue:
      self._drop_done()
    if len(self._pending) >= self.max_queue:
      raise codec_lib.ApiError(503, f"The queue is full ({self.max_queue} "
                               "requests waiting); retry after a moment.")
    self._pending.append(work)
    self.metrics.queue_depth.set(len(self._pending))
    self._arrived.set()

  @property
  def queue_depth(self) -> int:
    return len(self._pending)

  # The batcher.

  def _choices(self, work: Work) -> int:
    """Label slots of a rank batch holding `work` (`Engine.rank`'s `c`)."""
    return max(self.engine.warm_choices or 0,
               engine_lib.capacity_for(len(work.codec.labels)))

  def _key(self, work: Work) -> tuple[Any, ...]:
    """Requests of one key can share a forward pass: the same program (mode,
    beams; for rank, label slots) and, per task, the same task."""
    key = (work.mode, work.num_beams)
    if work.mode == engine_lib.RANK:
      key += (self._choices(work),)
    return key + (work.codec.name,) if self.batching == PER_TASK else key

  def _limit(self, work: Work) -> int:
    if work.mode == engine_lib.RANK:
      return self.engine.rank_examples(self._choices(work))
    return self.engine.batch_size

  def _unpadded(self, n: int) -> int:
    """How many of `n` waiting rows to take: with batch buckets, the largest
    batch size they fill exactly; the rest wait for the next batch instead
    of this one padding up (padded rows cost as much as real ones on a
    compute-bound device). Without buckets, all `n` (padded to the one
    size)."""
    fits = [size for size in self.engine.batch_sizes if size <= n]
    return fits[-1] if fits else n

  def _drop_done(self) -> None:
    live = [w for w in self._pending if not w.future.done()]
    self._pending = collections.deque(live)
    self.metrics.queue_depth.set(len(self._pending))

  def _compatible(self, key: tuple[Any, ...]) -> int:
    return sum(1 for w in self._pending
               if not w.future.done() and self._key(w) == key)

  def _take(self, key: tuple[Any, ...], limit: int) -> list[Work]:
    batch, rest = [], collections.deque()
    for w in self._pending:
      if w.future.done():
        continue
      if len(batch) < limit and self._key(w) == key:
        batch.append(w)
      else:
        rest.append(w)
    self._pending = rest
    self.metrics.queue_depth.set(len(rest))
    return batch

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      while self._pending and self._pending[0].future.done():
        self._pending.popleft()
      if not self._pending:
        self.metrics.queue_depth.set(0)
        if self.draining:
          return
        self._arrived.clear()
        await self._arrived.wait()
        continue
      first = self._pending[0]
      key, limit = self._key(first), self._limit(first)
      deadline = first.arrival + self.max_wait_s
      while not self.draining and self._compatible(key) < limit:
        remaining = deadline - loop.time()
        if remaining <= 0:
          break
        self._arrived.clear()
        try:
          await asyncio.wait_for(self._arrived.wait(), remaining)
        except asyncio.TimeoutError:
          break
      if first.mode != engine_lib.RANK:
        limit = self._unpadded(min(self._compatible(key), limit))
      batch = self._take(key, limit)
      if not batch:
        continue
      self.metrics.batch_size.observe(len(batch))
      try:
        results = await loop.run_in_executor(self._worker, self._execute,
                                             batch)
      except Exception as e:  # pylint: disable=broad-except
        _LOG.exception("A batch of %d failed.", len(batch))
        results = [e] * len(batch)
      for work, result in zip(batch, results):
        if work.future.done():
          continue
        if isinstance(result, BaseException):
          work.future.set_exception(result)
        else:
          work.future.set_result(result)

  def _execute(self, batch: list[Work]) -> list[Any]:
    """Runs one batch (worker thread): answers or exceptions, in order."""
    bank = self.engine.bank
    results: list[Any] = [None] * len(batch)
    live = []
    for i, work in enumerate(batch):
      if work.codec.name in bank.slots:
        live.append(i)
      else:
        results[i] = codec_lib.ApiError(
            404, f"The prompt of {work.codec.name} was removed before this "
            "request ran.")
    if not live:
      return results
    rows = [batch[i].encoded.tokens for i in live]
    slots = [bank.slots[batch[i].codec.name] for i in live]
    first = batch[live[0]]
    if first.mode == engine_lib.RANK:
      scores = self.engine.rank(bank, rows, slots, [
          batch[i].codec.candidates(self.engine.feature_lengths["targets"])
          for i in live])
      for i, s in zip(live, scores):
        results[i] = batch[i].codec.ranked(np.asarray(s),
                                           batch[i].encoded.example)
    else:
      tokens, scores = self.engine.decode(bank, rows, slots, first.num_beams)
      for i, t, s in zip(live, tokens, scores):
        results[i] = {**batch[i].codec.answer(t, batch[i].encoded.example),
                      "score": float(s)}
    return results
