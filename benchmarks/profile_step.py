r"""Where a compiled train step or greedy decode spends its time, by op kind.

    python benchmarks/profile_step.py --what=train [--dropout_rate=0.1]
    python benchmarks/profile_step.py --what=decode --batch_size=32 \
        --input_length=256

The model and batch are `step_time.py`'s (T5 1.1-small shape, random
weights, 100-position prompt; `--batch_size`, `--input_length` override its
defaults of 8 and 128). After two untimed calls, `--calls` calls run under
`jax.profiler.trace`; the Perfetto trace's XLA op events are summed per op
kind (the HLO name without its numeric suffix: `ynn_fusion` = YNNPACK
matrix multiplies with their fused elementwise ops, `transpose_copy_fusion`,
`while` = threefry's loop, ...), per call. Op times add up over both
threads, so they can exceed the wall time. `--loop_ops` also lists the ops
that run once per decode step (count >= decode length), which is how the
per-step cross-attention transposes were found. `--by_op` sums the op time
by the JAX operation each XLA op came from (the HLO `op_name`, layers
folded), e.g. `encoder/layers_N/attention/bhqk,bkhd->bqhd/dot_general`.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

import step_time  # benchmarks/step_time.py: the shared benchmark shape.


def _batch(shape: dict, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  b, n, t = shape["batch_size"], shape["inputs_length"], shape["targets_length"]
  return {
      "encoder_input_tokens": rng.integers(2, 32000, (b, n)).astype(np.int32),
      "decoder_input_tokens": rng.integers(2, 32000, (b, t)).astype(np.int32),
      "decoder_target_tokens": rng.integers(2, 32000, (b, t)).astype(np.int32),
      "decoder_loss_weights": np.ones((b, t), np.int32),
  }


def _op_times(trace_dir: str) -> tuple[collections.Counter, collections.Counter]:
  path = glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"),
                   recursive=True)[0]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    name = e.get("name", "")
    if (e.get("ph") != "X" or "dur" not in e or name.startswith("$") or
        "Thunk" in name or "Slinky" in name or "block_until" in name or
        name.startswith("PjitFunction")):
      continue
    total[name] += e["dur"]
    count[name] += 1
  return total, count


def op_sources(hlo_text: str) -> dict[str, str]:
  """XLA op name -> the JAX operation it came from (the HLO `op_name`
  metadata without the jit prefix, `layers_N` for every layer)."""
  source = {}
  for line in hlo_text.splitlines():
    match = re.match(r'\s*%?(\S+) = .*op_name="([^"]+)"', line)
    if match:
      op = re.sub(r"layers_\d+", "layers_N", match.group(2))
      source[match.group(1)] = op.split("/", 1)[-1]
  return source


def by_source(total: collections.Counter, source: dict[str, str],
              calls: int) -> collections.Counter:
  """Op time (ms per call) summed by `op_sources`' JAX operation."""
  out = collections.Counter()
  for name, us in total.items():
    kind = re.sub(r"[.\d]+$", "", name)
    out[f"{source.get(name, name)} [{kind}]"] += us / 1e3 / calls
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--what", choices=("train", "decode"), default="train")
  parser.add_argument("--dropout_rate", type=float, default=0.0)
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--input_length", type=int, default=None)
  parser.add_argument("--calls", type=int, default=3)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--loop_ops", action="store_true")
  parser.add_argument("--by_op", action="store_true",
                      help="also sum op time by the JAX operation each XLA "
                      "op came from (HLO op_name, layers folded)")
  args = parser.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  step_time.configure(batch_size=args.batch_size,
                      input_length=args.input_length)
  # pylint: disable=g-import-not-at-top
  import jax
  from prompt_tuning import partitioning
  from prompt_tuning.training import partitioned
  # pylint: enable=g-import-not-at-top
  model, tx, mesh, shardings, state, _ = step_time.build_jax_state(
      "prompt", args.dropout_rate)
  batch = _batch(step_time.SHAPE)
  if args.what == "train":
    step = partitioned.compile_train_step(model.loss_fn, tx, mesh, shardings)
    rng = step_time.dropout_key(1) if args.dropout_rate else None

    def call():
      nonlocal state
      state, _ = step(state, batch, rng)
      jax.block_until_ready(state)

    def hlo_text():
      with partitioning.mesh_context(mesh):
        return step.__wrapped__.lower(state, batch, rng).compile().as_text()
  else:
    params = state.params
    predict = partitioned.compile_model_fn(model.predict_batch, mesh,
                                           shardings.params)

    def call():
      jax.block_until_ready(predict(params, batch))

    def hlo_text():
      with partitioning.mesh_context(mesh):
        return predict.__wrapped__.lower(params, batch).compile().as_text()
  for _ in range(2):
    call()
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(args.calls):
        call()
    wall = (time.perf_counter() - start) / args.calls
    total, count = _op_times(trace_dir)
  kinds, kind_count = collections.Counter(), collections.Counter()
  for name, t in total.items():
    kind = re.sub(r"[.\d]+$", "", name)
    kinds[kind] += t
    kind_count[kind] += count[name]
  ops = sum(kinds.values())
  shape = step_time.SHAPE
  print(f"{args.what}, T5 1.1-small shape, batch {shape['batch_size']}, "
        f"inputs {shape['inputs_length']}, prompt {shape['prompt_length']}, "
        f"dropout {args.dropout_rate}; {wall * 1e3:.0f} ms per call (traced), "
        f"op time {ops / 1e3 / args.calls:.0f} ms per call over all threads; "
        f"load {os.getloadavg()[0]:.2f}")
  print("| op kind | ms per call | share | ops per call |")
  print("|---|---:|---:|---:|")
  for kind, t in kinds.most_common(args.top):
    print(f"| {kind} | {t / 1e3 / args.calls:.1f} | {100 * t / ops:.1f}% | "
          f"{kind_count[kind] / args.calls:.0f} |")
  if args.by_op:
    print("| JAX operation [XLA op kind] | ms per call |")
    print("|---|---:|")
    for op, ms in by_source(total, op_sources(hlo_text()),
                            args.calls).most_common(args.top):
      print(f"| {op} | {ms:.1f} |")
  if args.loop_ops:
    length = shape["targets_length"]
    loop = {n: t for n, t in total.items()
            if count[n] / args.calls >= length}
    print(f"ops run at least {length} times per call (the decode loop): "
          f"{sum(loop.values()) / 1e3 / args.calls:.0f} ms per call")
    for name, t in sorted(loop.items(), key=lambda x: -x[1])[:args.top]:
      print(f"  {t / 1e3 / args.calls:8.1f} ms  x{count[name] // args.calls}"
            f"  {name}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
