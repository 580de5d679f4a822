"""`python -m prompt_tuning.train` in one process, fed the global batches a
multi-process run with `NUM_SHARDS` data shards feeds.

  python tests/multihost_worker.py NUM_SHARDS [train flags ...]

A multi-process run reads one SeqIO shard per row block of the global batch
(`distributed.batch_feed`), so its batches are not those of a one-process
run reading every example. This worker concatenates the shards' batches in
row order instead, which is what the processes' blocks make together: the
one-process reference `test_multihost.py` compares a 2-process run with.
"""

import sys
from typing import Any, Iterator, Optional

import numpy as np
import seqio

from prompt_tuning import cli
from prompt_tuning import train
from prompt_tuning.training import data


def sharded_train_batches(num_shards: int):
  """`data.train_batches` reading `num_shards` shards, rows concatenated."""
  original = data.train_batches

  def batches(task_name: str, task_feature_lengths: Any, batch_size: int, *,
              shard_info: Optional[seqio.ShardInfo] = None,
              **kwargs) -> Iterator[dict[str, np.ndarray]]:
    if shard_info is not None:
      raise AssertionError("the reference runs in a single process")
    streams = [original(task_name, task_feature_lengths,
                        batch_size // num_shards,
                        shard_info=seqio.ShardInfo(index, num_shards),
                        **kwargs)
               for index in range(num_shards)]
    for parts in zip(*streams):
      yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return batches


if __name__ == "__main__":
  data.train_batches = sharded_train_batches(int(sys.argv[1]))
  cli.run(train.main, sys.argv[2:])
