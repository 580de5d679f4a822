r"""The memory plan's activation estimate against XLA's compiled step.

Compiles (shapes only, nothing runs) the prompt gradient of the trainer's
own step (`steps.trainable_gradients`: microbatches scanned as in training,
the frozen half in FROZEN_DTYPE) of T5 1.1 models with a 100-token prompt on
the default backend, under each REMAT_POLICY, and prints XLA's temporary
bytes (`memory_analysis().temp_size_in_bytes`: the step's activations and
scratch) beside `partitioning.activations.activation_bytes` on one device:

  .venv/bin/python benchmarks/plan_calibration.py \
    [--shapes=small:8:512,base:4:512] [--policies=none,full,dots,dots_all] \
    [--microbatches=1,2] [--dtype=float32] [--frozen_dtype=float32]

A shape is MODEL:BATCH:INPUTS (T5 1.1 sizes from configs/models).

CPU compilations keep rematerialisation in the backward pass and schedule
for memory (`activations.XLA_CPU_MEMORY_SCHEDULING`, as GPU and TPU
compilers do, and as the trainer compiles on CPU with a REMAT_POLICY; XLA's
CPU defaults keep nearly all a rematerialised layer would drop).
"""

import argparse
import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import main_job
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.partitioning import activations
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts.models import PromptTransformer
from prompt_tuning.training import steps
from prompt_tuning.training.train_state import TrainState


def measure(config, batch: int, inputs: int, targets: int, prompt: int,
            microbatches: int, frozen_dtype: str) -> tuple[int, int]:
  """(XLA temporary bytes, estimated activation bytes) of one step."""
  model = EncoderDecoderModel(PromptTransformer(config, prompt_length=prompt))
  params = model.init_shapes(inputs, targets)["params"]
  trainable, frozen = freezing.split_params(nn.unbox(params),
                                            freezing.PROMPT_PATTERNS)
  frozen = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, frozen_dtype), frozen)
  state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                     trainable=trainable, frozen=frozen, opt_state=())
  tokens = lambda n: jax.ShapeDtypeStruct((batch, n), jnp.int32)
  data = {"encoder_input_tokens": tokens(inputs),
          "decoder_input_tokens": tokens(targets),
          "decoder_target_tokens": tokens(targets),
          "decoder_loss_weights": tokens(targets)}

  def grads(s, b):
    return steps.trainable_gradients(model.loss_fn, s, b, None,
                                     microbatches)[0]

  compiled = jax.jit(grads).lower(state, data).compile(
      compiler_options=activations.XLA_CPU_MEMORY_SCHEDULING
      if jax.default_backend() == "cpu" else None)
  estimate, _ = activations.activation_bytes(
      activations.ActivationDims.from_config(config),
      activations.StepShape(batch, inputs, targets, prompt),
      {"data": 1, "model": 1}, np.dtype(config.dtype),
      remat_policy=config.remat_policy, num_microbatches=microbatches)
  return compiled.memory_analysis().temp_size_in_bytes, estimate


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="small:8:512,base:4:512")
  parser.add_argument("--policies", default="none,full,dots,dots_all")
  parser.add_argument("--microbatches", default="1,2")
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=100)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--frozen_dtype", default="float32")
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}, T5 1.1, prompt {args.prompt}, "
        f"targets {args.targets}, activations {args.dtype}, frozen "
        f"{args.frozen_dtype}")
  print("| model | batch | inputs | REMAT_POLICY | microbatches | XLA temp "
        "GiB | estimate GiB | estimate / XLA |")
  print("|---|---:|---:|---|---:|---:|---:|---:|")
  for shape in args.shapes.split(","):
    name, batch, inputs = shape.split(":")
    base = main_job.model_config(f"models/t5_1_1_{name}.gin")
    for policy in args.policies.split(","):
      for m in (int(x) for x in args.microbatches.split(",")):
        config = dataclasses.replace(base, remat_policy=policy,
                                     dtype=args.dtype, dropout_rate=0.0)
        start = time.time()
        xla, est = measure(config, int(batch), int(inputs), args.targets,
                           args.prompt, m, args.frozen_dtype)
        print(f"| {name} | {batch} | {inputs} | {policy} | {m} | "
              f"{xla / 2**30:.3f} | {est / 2**30:.3f} | {est / xla:.2f} |"
              f"  <!-- {time.time() - start:.0f}s -->", flush=True)


if __name__ == "__main__":
  main()
