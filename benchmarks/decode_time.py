r"""Greedy decoding time: cross-attention keys/values once vs every step.

    python benchmarks/decode_time.py [--repeats=5] [--batch_size=32] \
        [--peer_python=.venv-peer/bin/python --rounds=2]

The shape of issue 13's decoding figure: T5 1.1-small (random weights), a
100-position prompt, batch 32, inputs 128, 8 new tokens (the decode runs all
8 steps: EOS is masked out of the random model's choices by decoding a
fixed length). Two jitted decoders run side by side, alternated, on the same
parameters and batch:

  once      `EncoderDecoderModel.predict_batch`: each decoder layer's
            cross-attention keys and values of the encoder output computed
            once per decode (`t5.cross_attention_key_values`);
  per_step  the same greedy search with the keys and values projected from
            the encoder output again at every step (the previous behaviour,
            `cross_key_values=None`).

Both use the library's default model (head-major attention, float32) and
produce the same tokens (checked). Two more rows:

  once_t5x  `once` with `T5Config.attention_layout='t5x'` (ATTENTION_LAYOUT):
            T5X's literal einsums, bit-for-bit the original's;
  once_bf16 `once` with `T5Config.dtype='bfloat16'`: bfloat16 operands,
            float32 accumulation (`layers.matmul`); parameters float32.

The share of their tokens equal to `once`'s is printed (on random weights
many choices are near ties, so bfloat16 rounding flips some).

With `--peer_python`, a last row:

  peft      `benchmarks/peft_decode.py` in the peer venv: PEFT's
            `model.generate` (greedy, `min_new_tokens` so all 8 steps run)
            on a random batch of the same shape, its own process.

Rounds alternate (ours `--repeats` times, then the peer `--repeats` times,
`--rounds` times over), so load hits all alike. Prints the load average,
the median, min and max seconds of each and the ratios.
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

import step_time  # benchmarks/step_time.py: the shared benchmark shape.


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--peer_python", default=None,
                      help="the peer venv's python (benchmarks/README.md)")
  args = parser.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  # pylint: disable=g-import-not-at-top
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  from prompt_tuning.models import decoding
  # pylint: enable=g-import-not-at-top

  shape = step_time.SHAPE
  model, _, _ = step_time._jax_model("prompt", 0.0)  # pylint: disable=protected-access
  params = jax.jit(lambda r: nn.unbox(model.init(r, 4, 4))["params"])(
      jax.random.PRNGKey(0))
  rng = np.random.RandomState(0)
  batch = {"encoder_input_tokens": rng.randint(
      2, shape["vocab_size"], (args.batch_size, shape["inputs_length"])
  ).astype(np.int32)}
  length = args.new_tokens

  def once(p, b):
    return model.predict_batch(p, b, max_decode_length=length)[0]

  def per_step(p, b):
    encoded, mask = model.module.apply({"params": p},
                                       b["encoder_input_tokens"],
                                       method="encode")
    dummy = jnp.ones((args.batch_size, length), jnp.int32)

    def decode(tokens, variables):
      return model.module.apply(variables, encoded, mask, tokens, decode=True,
                                max_decode_length=length, method="decode",
                                mutable=["cache"])
    cache = jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype),
        jax.eval_shape(lambda: decode(dummy, {"params": p})[1]["cache"]))

    def tokens_to_logits(tokens, cache):
      logits, new_vars = decode(tokens, {"params": p, "cache": cache})
      return logits[:, -1, :], new_vars["cache"]
    return decoding.greedy_search(tokens_to_logits, cache, args.batch_size,
                                  length, model.eos_id,
                                  model.decoder_start_id)[0]

  def variant(layout=None, dtype="float32"):
    step_time.LAYOUT, step_time.DTYPE = layout, dtype
    other, _, _ = step_time._jax_model("prompt", 0.0)  # pylint: disable=protected-access
    step_time.LAYOUT, step_time.DTYPE = None, "float32"
    return lambda p, b: other.predict_batch(p, b, max_decode_length=length)[0]

  fns = {"once": jax.jit(once), "per_step": jax.jit(per_step),
         "once_t5x": jax.jit(variant(layout="t5x")),
         "once_bf16": jax.jit(variant(dtype="bfloat16"))}
  outputs = {name: np.asarray(fn(params, batch)) for name, fn in fns.items()}
  np.testing.assert_array_equal(outputs["once"], outputs["per_step"])
  same = {name: np.mean(outputs["once"] == outputs[name])
          for name in ("once_t5x", "once_bf16")}
  times = {name: [] for name in fns}
  if args.peer_python:
    times["peft"] = []
  for _ in range(args.rounds):
    for _ in range(args.repeats):
      for name, fn in fns.items():  # Alternated, so load hits both alike.
        start = time.perf_counter()
        jax.block_until_ready(fn(params, batch))
        times[name].append(time.perf_counter() - start)
    if args.peer_python:
      times["peft"] += _peer(args, shape)
  load = os.getloadavg()
  print(f"T5 1.1-small shape, prompt {shape['prompt_length']}, batch "
        f"{args.batch_size}, inputs {shape['inputs_length']}, {length} new "
        f"tokens; {args.rounds} x {args.repeats} runs each; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
  print("| decoder | median s | min s | max s |")
  print("|---|---:|---:|---:|")
  for name, ts in times.items():
    print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} | "
          f"{max(ts):.3f} |")
  ratio = statistics.median(times["per_step"]) / statistics.median(
      times["once"])
  print(f"once is {ratio:.2f}x as fast as per_step (median); same tokens.")
  for name in ("once_t5x", "once_bf16"):
    ratio = statistics.median(times[name]) / statistics.median(times["once"])
    print(f"once is {ratio:.2f}x as fast as {name} (median); "
          f"{100 * same[name]:.1f}% of {name}'s tokens equal once's.")
  if args.peer_python:
    for name in ("once", "once_t5x", "once_bf16"):
      ratio = statistics.median(times["peft"]) / statistics.median(times[name])
      print(f"{name} is {ratio:.2f}x as fast as peft generate (median).")
  return 0


def _peer(args: argparse.Namespace, shape: dict) -> list[float]:
  """`args.repeats` timed PEFT `generate` calls in a fresh peer process."""
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    cmd = [args.peer_python,
           str(pathlib.Path(__file__).parent / "peft_decode.py"),
           f"--repeats={args.repeats}", f"--batch_size={args.batch_size}",
           f"--inputs_length={shape['inputs_length']}",
           f"--new_tokens={args.new_tokens}",
           f"--prompt_length={shape['prompt_length']}",
           f"--json_out={out.name}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
      raise RuntimeError(f"peft_decode.py failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    row = json.loads(pathlib.Path(out.name).read_text())
  shape_out = row["generated_shape"]
  if shape_out != [args.batch_size, args.new_tokens + 1]:
    raise RuntimeError(f"peft generated {shape_out}, not "
                       f"{args.new_tokens} new tokens")
  return row["times_s"]


if __name__ == "__main__":
  sys.exit(main())
