"""Multi-process (multi-host) runs: start-up, data placement, agreement.

One process runs per host (or per GPU); each sees its own devices and all
of them together form the mesh. Every process runs the same program:

  distributed.initialize(coordinator_address='10.0.0.1:1234',
                         num_processes=2, process_id=0)   # 1 on the other
  trainer.train(...)

`python -m prompt_tuning.train` does this from its flags
(`--coordinator_address=host:port --num_processes=N --process_id=I`, or
`--multihost` to let JAX detect them on TPU pods, SLURM and Open MPI
clusters). It must come before anything initialises JAX's backends
(`jax.devices()`, any computation).

What each process does differently:

  * data: the rows of a global batch that this process's devices hold are
    read by this process only. Processes whose devices hold the same rows
    (the `data` mesh axis does not span them, e.g. mesh `(1, 8)` over two
    processes) read the same SeqIO shard; processes holding different rows
    read different shards (`BatchFeed`);
  * files: checkpoints are written by all processes together (orbax
    coordinates them); MODEL_DIR's lock, `config.gin`, the evaluation
    records, TensorBoard events and T5X exports by process 0 only
    (`is_primary`).

MODEL_DIR must be one directory every process sees (a shared file system
or a bucket). On CPU the processes' collectives go through gloo.
"""

import dataclasses
import logging
from typing import Any, Mapping, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np
import seqio

from prompt_tuning import errors

_log = logging.getLogger(__name__)

# The CPU collectives a multi-process CPU run needs ('gloo' or 'mpi'); JAX's
# own default on CPU is none in some versions.
_CPU_COLLECTIVES_OPTION = "jax_cpu_collectives_implementation"
_CPU_COLLECTIVES = ("gloo", "mpi")


class DistributedSetupError(errors.ConfigError):
  """The multi-process settings are incomplete or inconsistent."""


_initialized_with: Optional[dict[str, Any]] = None


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               local_device_ids: Optional[Sequence[int]] = None,
               auto: bool = False) -> bool:
  """Joins this process to a multi-process JAX run (`jax.distributed`).

  Either give `coordinator_address` ('host:port' of process 0, which also
  serves there), `num_processes` and `process_id` together, or `auto=True`
  to let JAX detect them (TPU pods, SLURM, Open MPI); with `auto`, settings
  given explicitly override the detected ones. Nothing given and `auto`
  False: a single-process run, nothing is done.

  Calling it again with the same settings does nothing (idempotent); other
  settings once initialised are an error.

  Args:
    coordinator_address: 'host:port' of process 0.
    num_processes: how many processes take part.
    process_id: this process's index, 0 ... num_processes - 1.
    local_device_ids: the local devices this process uses (default all),
      e.g. one GPU per process.
    auto: detect unset settings from the cluster environment.

  Returns:
    Whether the run is multi-process (jax.distributed is initialised).

  Raises:
    DistributedSetupError: for half-given or out-of-range settings, or when
      JAX's backends were already initialised by an earlier JAX call.
  """
  global _initialized_with
  settings = {"coordinator_address": coordinator_address,
              "num_processes": num_processes, "process_id": process_id,
              "local_device_ids": None if local_device_ids is None else
                                  tuple(local_device_ids),
              "auto": bool(auto)}
  if _initialized_with is not None:
    if settings != _initialized_with:
      raise DistributedSetupError(
          f"jax.distributed is already initialised with {_initialized_with};"
          f" cannot initialise it again with {settings}.")
    return True
  explicit = {k: settings[k] for k in
              ("coordinator_address", "num_processes", "process_id")}
  given = sorted(k for k, v in explicit.items() if v is not None)
  if not auto:
    if not given:
      if local_device_ids is not None:
        raise DistributedSetupError(
            "local_device_ids was given without coordinator_address, "
            "num_processes and process_id (or auto=True / --multihost).")
      return False
    missing = sorted(set(explicit) - set(given))
    if missing:
      raise DistributedSetupError(
          f"A multi-process run needs coordinator_address, num_processes and "
          f"process_id together; {', '.join(given)} given but "
          f"{', '.join(missing)} missing (flags --coordinator_address=host:port"
          " --num_processes=N --process_id=I), or use auto=True (--multihost)"
          " to detect them on TPU pods, SLURM or Open MPI clusters.")
  _check_values(coordinator_address, num_processes, process_id)
  if jax.distributed.is_initialized():
    raise DistributedSetupError(
        "jax.distributed was initialised outside distributed.initialize; "
        "call only one of them.")
  # pylint: disable-next=protected-access
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    raise DistributedSetupError(
        "distributed.initialize must run before any JAX call that starts its "
        "backends (jax.devices(), any computation); call it first thing in "
        "the program.")
  if getattr(jax.config, _CPU_COLLECTIVES_OPTION) not in _CPU_COLLECTIVES:
    # Only the CPU client reads it: harmless on GPU and TPU.
    jax.config.update(_CPU_COLLECTIVES_OPTION, "gloo")
  kwargs = {k: v for k, v in explicit.items() if v is not None}
  if local_device_ids is not None:
    kwargs["local_device_ids"] = list(local_device_ids)
  if not auto:
    # Explicit settings only: no cluster environment is consulted.
    kwargs["cluster_detection_method"] = "deactivate"
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, TypeError) as e:
    raise DistributedSetupError(
        f"jax.distributed.initialize({kwargs}) failed: {e}. Without a "
        "detectable cluster, give --coordinator_address, --num_processes and "
        "--process_id.") from e
  _initialized_with = settings
  if jax.process_index() > 0:
    # One process speaks for the run; the others only report errors.
    logging.getLogger("prompt_tuning").setLevel(logging.ERROR)
  _log.info("Process %d of %d; %d local of %d devices.", jax.process_index(),
            jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def _check_values(coordinator_address: Optional[str],
                  num_processes: Optional[int],
                  process_id: Optional[int]) -> None:
  if coordinator_address is not None and (
      ":" not in coordinator_address or
      not coordinator_address.rsplit(":", 1)[1].isdigit()):
    raise DistributedSetupError(
        f"coordinator_address {coordinator_address!r} must be 'host:port', "
        "e.g. '10.0.0.1:1234' (process 0's host).")
  if num_processes is not None and (not isinstance(num_processes, int) or
                                    num_processes < 1):
    raise DistributedSetupError(
        f"num_processes must be a positive int, got {num_processes!r}.")
  if process_id is not None:
    if not isinstance(process_id, int) or process_id < 0:
      raise DistributedSetupError(
          f"process_id must be a non-negative int, got {process_id!r}.")
    if num_processes is not None and process_id >= num_processes:
      raise DistributedSetupError(
          f"process_id {process_id} must be below num_processes "
          f"{num_processes}.")


def is_multiprocess() -> bool:
  """Whether more than one process takes part in the run."""
  return jax.process_count() > 1


def is_primary() -> bool:
  """Whether this process writes the run's shared files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process gets here (nothing to do with one)."""
  if is_multiprocess():
    multihost_utils.sync_global_devices(name)


def agree(ok: bool) -> bool:
  """Process 0's `ok`, on every process (a collective: all must call it)."""
  if not is_multiprocess():
    return ok
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def max_over_processes(values: Sequence[int]) -> tuple[int, ...]:
  """The elementwise maximum of every process's `values` (a collective: all
  must call it), e.g. the lengths a bucketed global batch needs."""
  if not is_multiprocess():
    return tuple(int(v) for v in values)
  gathered = multihost_utils.process_allgather(np.asarray(values, np.int32))
  return tuple(int(v) for v in np.max(np.asarray(gathered), axis=0))


@dataclasses.dataclass(frozen=True)
class BatchFeed:
  """Which rows of the global batch this process reads and feeds.

  Attributes:
    sharding: the batch sharding (rows over the mesh's `data` axis).
    batch_size: the global batch size.
    rows: `(start, stop)`: the global rows this process's devices hold.
    shard_info: the SeqIO shard this process reads; None when every
      process needs every row (one process, or `data` not spanning them).
  """
  sharding: jax.sharding.Sharding
  batch_size: int
  rows: tuple[int, int]
  shard_info: Optional[seqio.ShardInfo]

  @property
  def local_batch_size(self) -> int:
    """Rows per process batch (the global batch size with one shard)."""
    return self.rows[1] - self.rows[0]

  def __call__(self, local: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
    """This process's rows -> the global batch (unchanged in one process)."""
    if not is_multiprocess():
      return local
    return {k: jax.make_array_from_process_local_data(
                self.sharding, v, (self.batch_size,) + v.shape[1:])
            for k, v in local.items()}

  def from_full(self, batch: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
    """The global batch from the whole batch, which every process has (e.g.
    evaluation, where each process reads the whole split)."""
    if not is_multiprocess():
      return batch
    start, stop = self.rows
    return self({k: v[start:stop] for k, v in batch.items()})


def _row_block(indices: Sequence[tuple[slice, ...]], batch_size: int,
               process: int) -> tuple[int, int]:
  """The contiguous rows covered by a process's devices' indices.

  Works on the index ranges, never on single rows, so its cost does not
  grow with the batch size.
  """
  spans = []
  for index in indices:
    start, stop, step = index[0].indices(batch_size)
    if step != 1:
      raise ValueError(f"Process {process}'s devices hold strided batch rows "
                       f"{index[0]}; order the mesh's devices by process "
                       "(create_mesh does).")
    if stop > start:
      spans.append((start, stop))
  spans.sort()
  first, end = spans[0]
  for start, stop in spans[1:]:
    if start > end:
      raise ValueError(
          f"Process {process}'s devices hold the non-contiguous batch rows "
          f"{_merged(spans)}; order the mesh's devices by process "
          "(create_mesh does).")
    end = max(end, stop)
  return first, end


def _merged(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
  """Sorted `[start, stop)` spans with the overlapping ones joined."""
  out: list[list[int]] = []
  for start, stop in sorted(spans):
    if out and start <= out[-1][1]:
      out[-1][1] = max(out[-1][1], stop)
    else:
      out.append([start, stop])
  return [(a, b) for a, b in out]


def batch_feed(sharding: jax.sharding.Sharding, batch_size: int) -> BatchFeed:
  """The `BatchFeed` of this process for a global batch of `batch_size`.

  Processes are grouped by the rows their devices hold: each group is one
  data shard (`ShardInfo(index, num_shards)` in row order), every process
  of a group reading it whole. The groups must split the batch into equal,
  disjoint blocks.
  """
  by_process: dict[int, list[tuple[slice, ...]]] = {}
  for device, index in sharding.devices_indices_map((batch_size,)).items():
    by_process.setdefault(device.process_index, []).append(index)
  blocks = {p: _row_block(ix, batch_size, p) for p, ix in by_process.items()}
  distinct = sorted(set(blocks.values()))
  sizes = {stop - start for start, stop in distinct}
  # Disjoint blocks end to end from row 0 cover the batch exactly.
  tiled = all(a[1] == b[0] for a, b in zip(distinct, distinct[1:]))
  if (len(sizes) != 1 or not tiled or distinct[0][0] != 0 or
      distinct[-1][1] != batch_size):
    raise ValueError(
        f"The processes' batch rows {blocks} do not split the batch of "
        f"{batch_size} into equal disjoint blocks.")
  mine = blocks[jax.process_index()]
  shard_info = None
  if len(distinct) > 1:
    shard_info = seqio.ShardInfo(index=distinct.index(mine),
                                 num_shards=len(distinct))
  return BatchFeed(sharding=sharding, batch_size=batch_size, rows=mine,
                   shard_info=shard_info)


def gather(x: Any) -> Any:
  """A (possibly process-spanning) array tree as host numpy, on every
  process."""
  if not is_multiprocess():
    return jax.device_get(x)
  return multihost_utils.process_allgather(x, tiled=True)
