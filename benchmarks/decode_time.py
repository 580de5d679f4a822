r"""Greedy decoding time: cross-attention keys/values once vs every step.

    python benchmarks/decode_time.py [--repeats=5] [--batch_size=32]

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

Both produce the same tokens (checked). Prints the load average, the median,
min and max seconds of each and their ratio.
"""

import argparse
import os
import statistics
import sys
import time

import step_time  # benchmarks/step_time.py: the shared benchmark shape.


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=8)
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

  fns = {"once": jax.jit(once), "per_step": jax.jit(per_step)}
  outputs = {name: np.asarray(fn(params, batch)) for name, fn in fns.items()}
  np.testing.assert_array_equal(outputs["once"], outputs["per_step"])
  times = {name: [] for name in fns}
  for _ in range(args.repeats):
    for name, fn in fns.items():  # Alternated, so load hits both alike.
      start = time.perf_counter()
      jax.block_until_ready(fn(params, batch))
      times[name].append(time.perf_counter() - start)
  load = os.getloadavg()
  print(f"T5 1.1-small shape, prompt {shape['prompt_length']}, batch "
        f"{args.batch_size}, inputs {shape['inputs_length']}, {length} new "
        f"tokens; {args.repeats} alternated runs; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
  print("| cross-attention keys/values | median s | min s | max s |")
  print("|---|---:|---:|---:|")
  for name, ts in times.items():
    print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} | "
          f"{max(ts):.3f} |")
  ratio = statistics.median(times["per_step"]) / statistics.median(
      times["once"])
  print(f"once is {ratio:.2f}x as fast as per_step (median); same tokens.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
