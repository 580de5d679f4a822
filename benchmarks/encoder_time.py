r"""Where the decode's encoder loses to torch: matmul, attention core, encoder.

    python benchmarks/encoder_time.py --peer_python=.venv-peer/bin/python \
        [--rounds=2] [--calls=10] [--profile]

Three forward-only measurements at the decode benchmark's encoder shape
(T5 1.1-small, batch 32, 128 inputs + 100 prompt positions = 228, float32,
random values), each in JAX (this venv) and in torch (the peer venv):

  matmul     one `[7296, 512] x [512, 1024]` product (an MLP input
             projection of the whole batch), reported as GFLOP/s;
  attention  one layer's attention core on `[32, 228, 6, 64]` queries, keys
             and values: scores, softmax, weighted sum. JAX: T5X's
             `bqhd,bkhd->bhqk` / `bhqk,bkhd->bqhd` einsums, as
             `layers.MultiHeadDotProductAttention`; torch: Hugging Face T5's
             `matmul`, `softmax`, `matmul` on head-major tensors. JAX is
             also timed with head-major einsums (`bhqd,bhkd->bhqk`,
             `bhqk,bhkd->bhqd`), printed with its largest difference from
             T5X's formulation;
  encoder    the 8-layer encoder on embedded inputs `[32, 228, 512]`: ours
             `models.t5.Encoder`, torch `transformers.T5EncoderModel` with
             `inputs_embeds` (no dropout, `no_grad`).

Each side runs in its own process (`--worker`), `--calls` timed calls after
an untimed one; the sides alternate `--rounds` times and the table shows
the median over rounds of each side's median, the 1-minute load before and
after each worker, and ours / torch. `--profile` also prints the JAX
encoder's op time summed by the JAX operation each XLA op came from (the
HLO `op_name`, layers folded), which is how the fused softmax + weighted
sum was found. `--xla_flags` passes XLA_FLAGS to the JAX worker only, for
A/B runs of XLA options (the row is labelled with them).
"""

import argparse
import collections
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

import step_time  # benchmarks/step_time.py (no jax at import).

B, L, E, H, D, F = 32, 228, 512, 6, 64, 1024
LAYERS = 8
MATMUL_FLOP = 2 * B * L * E * F


def _median_s(fn: Callable[[], Any], calls: int) -> float:
  """Median seconds of `calls` calls of `fn()` (which must block), after a
  warm-up call (`step_time.time_calls`)."""
  return statistics.median(step_time.time_calls(fn, calls))


def _jax_worker(calls: int, profile: bool) -> dict[str, Any]:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from prompt_tuning.models import config as t5_config
  from prompt_tuning.models import t5
  # pylint: enable=g-import-not-at-top
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((B * L, E), np.float32))
  w = jnp.asarray(rng.standard_normal((E, F), np.float32) * 0.05)
  matmul = jax.jit(lambda x, y: x @ y)
  q, k, v = (jnp.asarray(rng.standard_normal((B, L, H, D), np.float32))
             for _ in range(3))

  @jax.jit
  def attention(q, k, v):
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)

  @jax.jit
  def head_major(q, k, v):  # [b, h, l, d] in and out.
    weights = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k), axis=-1)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, v)

  qh, kh, vh = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
  head_major_diff = float(jnp.abs(
      attention(q, k, v) -
      jnp.transpose(head_major(qh, kh, vh), (0, 2, 1, 3))).max())

  cfg = t5_config.T5Config(
      vocab_size=32128, emb_dim=E, num_heads=H, head_dim=D, mlp_dim=F,
      num_encoder_layers=LAYERS, num_decoder_layers=LAYERS,
      mlp_activations=t5_config.GATED_GELU, dropout_rate=0.0,
      logits_via_embedding=False)
  encoder = t5.Encoder(cfg)
  x = jnp.asarray(rng.standard_normal((B, L, E), np.float32))
  mask = jnp.ones((B, L), jnp.int32)
  params = jax.jit(encoder.init)(jax.random.PRNGKey(0), x, mask)
  encode = jax.jit(encoder.apply)
  row = {
      "matmul_s": _median_s(lambda: matmul(a, w).block_until_ready(), calls),
      "attention_s": _median_s(
          lambda: attention(q, k, v).block_until_ready(), calls),
      "head_major_s": _median_s(
          lambda: head_major(qh, kh, vh).block_until_ready(), calls),
      "head_major_max_diff": head_major_diff,
      "encoder_s": _median_s(
          lambda: encode(params, x, mask).block_until_ready(), calls),
  }
  if profile:
    row["profile"] = _profile(encode, params, x, mask)
  return row


def _profile(encode, params, x, mask, calls: int = 3) -> list[tuple[str, float]]:
  """(JAX operation, ms per call) of the encoder's XLA ops, largest first."""
  import jax  # pylint: disable=g-import-not-at-top
  import profile_step  # pylint: disable=g-import-not-at-top
  source = profile_step.op_sources(
      encode.lower(params, x, mask).compile().as_text())
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(calls):
        encode(params, x, mask).block_until_ready()
    total, _ = profile_step._op_times(trace_dir)  # pylint: disable=protected-access
  by_op = profile_step.by_source(total, source, calls)
  return by_op.most_common(12)


def _torch_worker(calls: int) -> dict[str, Any]:
  # pylint: disable=g-import-not-at-top
  import torch
  import transformers
  # pylint: enable=g-import-not-at-top
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  gen = torch.Generator().manual_seed(0)
  a = torch.randn(B * L, E, generator=gen)
  w = torch.randn(E, F, generator=gen) * 0.05
  q, k, v = (torch.randn(B, H, L, D, generator=gen) for _ in range(3))

  def attention():
    weights = torch.softmax(torch.matmul(q, k.transpose(3, 2)), dim=-1)
    return torch.matmul(weights, v)

  config = transformers.T5Config(
      vocab_size=32128, d_model=E, d_kv=D, d_ff=F, num_layers=LAYERS,
      num_heads=H, feed_forward_proj="gated-gelu", dropout_rate=0.0)
  encoder = transformers.T5EncoderModel(config).eval()
  x = torch.randn(B, L, E, generator=gen)
  mask = torch.ones(B, L, dtype=torch.long)

  def encode():
    return encoder(inputs_embeds=x, attention_mask=mask)

  with torch.no_grad():
    return {"matmul_s": _median_s(lambda: a @ w, calls),
            "attention_s": _median_s(attention, calls),
            "encoder_s": _median_s(encode, calls),
            "torch_threads": torch.get_num_threads()}


def _run(cmd: list[str], env: Optional[dict[str, str]] = None
         ) -> dict[str, Any]:
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "row.json"
    before = os.getloadavg()[0]
    subprocess.run(cmd + [f"--json_out={out}"], check=True, env=env)
    row = json.loads(out.read_text())
  row["load"] = (before, os.getloadavg()[0])
  return row


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--peer_python", default=None)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--calls", type=int, default=10)
  parser.add_argument("--profile", action="store_true")
  parser.add_argument("--xla_flags", default=None)
  parser.add_argument("--worker", choices=("jax", "torch"), default=None,
                      help=argparse.SUPPRESS)
  parser.add_argument("--json_out", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    row = (_jax_worker(args.calls, args.profile) if args.worker == "jax"
           else _torch_worker(args.calls))
    pathlib.Path(args.json_out).write_text(json.dumps(row))
    return 0

  script = os.path.abspath(__file__)
  env = dict(os.environ)
  label = "jax"
  if args.xla_flags:
    env["XLA_FLAGS"] = args.xla_flags
    label = f"jax ({args.xla_flags})"
  sides = [(label, [sys.executable, script, "--worker=jax",
                    f"--calls={args.calls}"], env)]
  if args.peer_python:
    sides.append(("torch", [args.peer_python, script, "--worker=torch",
                            f"--calls={args.calls}"], None))
  rows = collections.defaultdict(list)
  profile = None
  for round_ in range(args.rounds):
    for name, cmd, side_env in sides:
      extra = ["--profile"] if (args.profile and name != "torch" and
                                profile is None) else []
      row = _run(cmd + extra, side_env)
      profile = row.pop("profile", profile)
      rows[name].append(row)
      print(f"  round {round_ + 1} {name}: " + ", ".join(
          f"{k} {row[k]:.4f}" for k in ("matmul_s", "attention_s",
                                        "encoder_s")) +
            f" (load {row['load'][0]:.2f}/{row['load'][1]:.2f})", flush=True)

  def med(name, key):
    return statistics.median(r[key] for r in rows[name])

  print(f"\nT5 1.1-small encoder shape [{B}, {L}, {E}], {H} heads, float32; "
        f"median of {args.rounds} rounds x {args.calls} calls")
  print("| side | matmul ms (GFLOP/s) | attention core ms | encoder ms |")
  print("|---|---:|---:|---:|")
  for name, _, _ in sides:
    m = med(name, "matmul_s")
    print(f"| {name} | {m * 1e3:.1f} ({MATMUL_FLOP / m / 1e9:.0f}) | "
          f"{med(name, 'attention_s') * 1e3:.1f} | "
          f"{med(name, 'encoder_s') * 1e3:.0f} |")
  if args.peer_python:
    print("| torch time / ours | " + " | ".join(
        f"{med('torch', key) / med(label, key):.2f}x"
        for key in ("matmul_s", "attention_s", "encoder_s")) + " |")
  print(f"JAX attention core with head-major [b, h, l, d] einsums "
        f"(`bhqd,bhkd->bhqk`, `bhqk,bhkd->bhqd`; not the project's layout): "
        f"{med(label, 'head_major_s') * 1e3:.1f} ms, max |difference| from "
        f"T5X's einsums {rows[label][0]['head_major_max_diff']:.1e} (not "
        f"bit-identical).")
  if profile:
    print("\nJAX encoder, op time per call by source operation "
          "(summed over concurrent ops, so it can exceed the wall time):")
    for op, ms in profile:
      print(f"  {ms:8.1f} ms  {op}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
