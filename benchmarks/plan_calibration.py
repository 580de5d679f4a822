r"""The memory plan's activation estimate against XLA's compiled step.

Compiles the gradient of the prompt-tuning loss (shapes only, nothing
runs) of T5 1.1 small with a 100-token prompt, on the default backend, and
prints XLA's temporary-buffer bytes (`memory_analysis().temp_size_in_bytes`,
the step's activations and scratch) beside
`partitioning.memory.activation_bytes` on one device:

  .venv/bin/python benchmarks/plan_calibration.py [--batch=8] \
    [--inputs=156,512,1124] [--dtype=float32] [--full]

`--full` differentiates every parameter (model fine-tuning) instead.
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning.models import T5Config
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.partitioning import memory
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts.models import PromptTransformer

SMALL = dict(vocab_size=32128, emb_dim=512, num_heads=6, head_dim=64,
             mlp_dim=1024, num_encoder_layers=8, num_decoder_layers=8)


def measure(batch: int, inputs: int, targets: int, prompt: int, dtype: str,
            full: bool) -> tuple[int, int]:
  """(XLA temporary bytes, estimated activation bytes) for one step."""
  config = T5Config(**SMALL, dtype=dtype)
  model = EncoderDecoderModel(PromptTransformer(config, prompt_length=prompt))
  boxed = model.init_shapes(inputs, targets)["params"]
  patterns = (".*",) if full else freezing.PROMPT_PATTERNS
  trainable, frozen = freezing.split_params(nn.unbox(boxed), patterns)
  tokens = lambda n: jax.ShapeDtypeStruct((batch, n), jnp.int32)
  data = {"encoder_input_tokens": tokens(inputs),
          "decoder_input_tokens": tokens(targets),
          "decoder_target_tokens": tokens(targets)}

  def loss(t, f, b):
    return model.loss_fn(freezing.merge_params(t, f), b)[0]

  compiled = jax.jit(jax.grad(loss)).lower(trainable, frozen, data).compile()
  estimate, _ = memory.activation_bytes(
      memory.ActivationDims.from_config(config), batch, inputs, targets,
      {"data": 1, "model": 1}, np.dtype(dtype), prompt_length=prompt)
  return compiled.memory_analysis().temp_size_in_bytes, estimate


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", default="156,512,1124")
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--full", action="store_true")
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}, T5 1.1 small, batch {args.batch}, "
        f"prompt {args.prompt}, targets {args.targets}, {args.dtype}, "
        f"{'all parameters' if args.full else 'prompt'} trained")
  print("| inputs | XLA temp GiB | estimate GiB | estimate / XLA |")
  print("|---:|---:|---:|---:|")
  for n in (int(x) for x in args.inputs.split(",")):
    xla, est = measure(args.batch, n, args.targets, args.prompt, args.dtype,
                       args.full)
    print(f"| {n} | {xla / 2**30:.2f} | {est / 2**30:.2f} | "
          f"{est / xla:.2f} |")


if __name__ == "__main__":
  main()
