r"""What a new batch shape costs: trace, compile and first call of the step.

    python benchmarks/compile_time.py [--batch_size=32] [--input_length=64]

For the race's first bucket (T5 1.1-small shape, random weights, batch 32,
64 input tokens + 100 prompt positions, targets 8), each dropout rate in
`--dropout_rates` (default 0 and 0.1; a nonzero rate once per dropout key
implementation of `--dropout_rng_impls`, default T5X's threefry and the
library's default 'unsafe_rbg') runs in its own process (`--worker`): the real train step (`partitioned.compile_train_step`) is
lowered, compiled, called once and then `--calls` more times; the table
gives the seconds of each phase, the steady call's median and the `while`
loops in the optimised HLO (threefry's rolled rounds, one per random-bits
draw: XLA inlines JAX's out-of-line threefry function at every dropout
site and key derivation). The random initialisation's jitted init
(`state.initial_params` with no checkpoint; T5X draws every frozen weight,
as ours does when there is no checkpoint) is timed the same way once.
Prints the 1-minute load before and after each worker.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import step_time  # benchmarks/step_time.py: the shared benchmark shape.


def _phases(jitted, args: tuple[Any, ...], calls: int, mesh
            ) -> dict[str, Any]:
  """Lower / compile / first call / median call seconds of `jitted(*args)`,
  whose first argument is donated and replaced by the first output."""
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_tuning import partitioning  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  with partitioning.mesh_context(mesh):
    lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()
  args = list(args)
  times = []
  for _ in range(calls + 1):
    t0 = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
    if isinstance(out, tuple):
      args[0] = out[0]
  return {"lower_s": lowered_at - start, "compile_s": compiled_at - lowered_at,
          "first_call_s": times[0],
          "call_s": statistics.median(times[1:]),
          "while_loops": compiled.as_text().count(" while(")}


def run_worker(dropout_rate: float, calls: int, init: bool) -> dict[str, Any]:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  # pylint: disable=g-import-not-at-top
  import flax.linen as nn
  import jax
  import profile_step
  from prompt_tuning.checkpoints import param_tree
  from prompt_tuning.training import partitioned
  # pylint: enable=g-import-not-at-top
  model, tx, mesh, shardings, state, _ = step_time.build_jax_state(
      "prompt", dropout_rate)
  step = partitioned.compile_train_step(model.loss_fn, tx, mesh, shardings)
  batch = profile_step._batch(step_time.SHAPE)  # pylint: disable=protected-access
  row = _phases(step.__wrapped__, (state, batch, step_time.dropout_key(1)),
                calls, mesh)
  if init:
    def init_all(key):
      return param_tree.flatten_params(nn.unbox(model.init(key, 1, 1))["params"])
    row["init"] = _phases(jax.jit(init_all), (jax.random.PRNGKey(0),), 1,
                          mesh)
  return row


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--input_length", type=int, default=64)
  parser.add_argument("--dropout_rates", default="0,0.1")
  parser.add_argument("--dropout_rng_impls", default="threefry2x32,unsafe_rbg",
                      help="dropout key implementations, one row each for "
                      "every nonzero dropout rate (training.steps."
                      "DROPOUT_RNG_IMPLS)")
  parser.add_argument("--dropout_rng_impl", default=None,
                      help=argparse.SUPPRESS)
  parser.add_argument("--calls", type=int, default=3)
  parser.add_argument("--worker", type=float, default=None,
                      help=argparse.SUPPRESS)
  parser.add_argument("--init", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--json_out", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  step_time.configure(batch_size=args.batch_size,
                      input_length=args.input_length)
  if args.worker is not None:
    step_time.RNG_IMPL = args.dropout_rng_impl
    row = run_worker(args.worker, args.calls, args.init)
    pathlib.Path(args.json_out).write_text(json.dumps(row))
    return 0

  rows = []
  runs = [(float(rate), impl) for rate in args.dropout_rates.split(",")
          for impl in (args.dropout_rng_impls.split(",") if float(rate)
                       else [None])]
  for i, (rate, impl) in enumerate(runs):
    with tempfile.TemporaryDirectory() as tmp:
      out = pathlib.Path(tmp) / "row.json"
      before = os.getloadavg()[0]
      subprocess.run(
          [sys.executable, os.path.abspath(__file__), f"--worker={rate}",
           f"--batch_size={args.batch_size}",
           f"--input_length={args.input_length}", f"--calls={args.calls}",
           f"--json_out={out}"] + (["--init"] if i == 0 else [])
          + ([f"--dropout_rng_impl={impl}"] if impl else []),
          check=True)
      row = json.loads(out.read_text())
    row.update(label=f"train step, dropout {rate:g}"
               + (f", {impl} keys" if impl else ""),
               load=(before, os.getloadavg()[0]))
    rows.append(row)
    if "init" in row:
      rows.append(dict(row.pop("init"), label="random init (all weights)",
                       load=row["load"]))
  shape = step_time.SHAPE
  print(f"\nT5 1.1-small shape, batch {shape['batch_size']}, inputs "
        f"{shape['inputs_length']} + prompt {shape['prompt_length']}, targets "
        f"{shape['targets_length']}; seconds")
  print("| what | lower | compile | 1st call | later calls (median) | "
        "`while` loops | load |")
  print("|---|---:|---:|---:|---:|---:|---|")
  for row in rows:
    print(f"| {row['label']} | {row['lower_s']:.2f} | {row['compile_s']:.2f} "
          f"| {row['first_call_s']:.2f} | {row['call_s']:.2f} | "
          f"{row['while_loops']} | {row['load'][0]:.2f}/{row['load'][1]:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
