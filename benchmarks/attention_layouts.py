r"""One attention block's forward + backward in three layouts, side by side.

    python benchmarks/attention_layouts.py [--calls=15]

The train step's shape (T5 1.1-small, batch 8, 128 inputs + 100 prompt
positions, 6 heads of 64): T5X's `bqhd,bkhd->bhqk` einsums (the project's
`layers.MultiHeadDotProductAttention`), head-major projections
(`ble,ehd->bhld`, no transposes around the batched multiplies) and
`jax.nn.dot_product_attention`. Random weights; prints the median ms of each
gradient call, the loss of each (equal up to float rounding) and the load.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

B, L, H, D, E = 8, 228, 6, 64, 512


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--calls", type=int, default=15)
  args = parser.parse_args(argv)
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  x = jax.random.normal(keys[0], (B, L, E))
  wq, wk, wv, wo = (jax.random.normal(k, (E, H * D)) * 0.05 for k in keys[1:])

  def t5x(x):
    q, k, v = ((x @ w).reshape(B, L, H, D) for w in (wq, wk, wv))
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), -1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(B, L, H * D)
    return (out @ wo.T).sum()

  def head_major(x):
    q, k, v = (jnp.einsum("ble,ehd->bhld", x, w.reshape(E, H, D))
               for w in (wq, wk, wv))
    weights = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k), -1)
    out = jnp.einsum("bhqk,bhkd->bhqd", weights, v)
    return jnp.einsum("bhqd,hde->bqe", out, wo.T.reshape(H, D, E)).sum()

  def library(x):
    q, k, v = ((x @ w).reshape(B, L, H, D) for w in (wq, wk, wv))
    out = jax.nn.dot_product_attention(q, k, v, scale=1.0).reshape(B, L, H * D)
    return (out @ wo.T).sum()

  fns = {"t5x_einsums": t5x, "head_major": head_major,
         "dot_product_attention": library}
  grads = {n: jax.jit(jax.grad(f)) for n, f in fns.items()}
  times = {n: [] for n in fns}
  for g in grads.values():
    g(x).block_until_ready()
  for _ in range(args.calls):  # Alternated, so load hits all alike.
    for name, g in grads.items():
      start = time.perf_counter()
      g(x).block_until_ready()
      times[name].append(time.perf_counter() - start)
  load = os.getloadavg()
  print(f"attention forward+backward [{B}, {L}, {E}], {H} heads; "
        f"{args.calls} alternated calls; load {load[0]:.2f}")
  base = statistics.median(times["t5x_einsums"])
  for name, fn in fns.items():
    med = statistics.median(times[name])
    print(f"  {name:22s} {med * 1e3:6.1f} ms  ({base / med:.2f}x t5x)  "
          f"loss {float(fn(x)):.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
