r"""Peer benchmark: Hugging Face PEFT prompt tuning of a T5 1.1-small shape.

Run by `benchmarks/step_time.py --peer_python=...` in a separate venv that
has `benchmarks/requirements-peer.txt` (torch, transformers, peft) and not
this project; it imports only those, the standard library and its sibling
peer scripts (`peft_rte_race.build_model`), and writes
one JSON result. Standalone:

  .venv-peer/bin/python benchmarks/peft_step.py --json_out=/tmp/peft.json

What one step is: `T5ForConditionalGeneration` (random init, from a
`T5Config` of the given shape: gated GELU, untied logits) wrapped by
`peft.get_peft_model` with `PromptTuningConfig(task_type=SEQ_2_SEQ_LM,
num_virtual_tokens=100, prompt_tuning_init=RANDOM)`, in train mode; forward
with `labels` (mean token cross entropy, decoder inputs shifted from the
labels), `loss.backward()`, then `transformers.optimization.Adafactor` with
the hyper-parameters of `prompt_tuning.training.optimizers.adafactor()`
(lr 0.3 constant, decay_rate -0.8, clip_threshold 1.0, weight decay 1e-5,
no momentum, no parameter scaling) and `zero_grad(set_to_none=True)`.
torch uses `--threads` intra-op threads (default: all cores).
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Optional, Sequence

import memory  # benchmarks/memory.py (this script's directory is on sys.path)
import peft_rte_race  # benchmarks/peft_rte_race.py: build_model.

_MIB = 1024.0 * 1024.0


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Builds the PEFT model and times `args.steps` optimizer steps."""
  load_start = os.getloadavg()
  rss_start = memory.current_rss_bytes()
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  rss_imported = memory.current_rss_bytes()

  torch.set_num_threads(args.threads)
  args.seed = 0
  # The same model and optimizer as the RTE race's peer.
  _, model, optimizer, info = peft_rte_race.build_model(args)
  model.train()
  rss_state = memory.current_rss_bytes()

  gen = torch.Generator().manual_seed(0)
  b, l, t = args.batch_size, args.inputs_length, args.targets_length
  input_ids = torch.randint(2, args.vocab_size, (b, l), generator=gen)
  attention_mask = torch.ones((b, l), dtype=torch.long)
  labels = torch.randint(2, args.vocab_size, (b, t), generator=gen)

  def step() -> float:
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                labels=labels)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(out.loss.detach())

  t0 = time.perf_counter()
  step()
  first_step_s = time.perf_counter() - t0
  for _ in range(max(args.warmup - 1, 0)):
    step()
  rss_before_steps = memory.current_rss_bytes()
  times = []
  with memory.RssSampler() as sampler:
    for _ in range(args.steps):
      t0 = time.perf_counter()
      loss = step()
      times.append(time.perf_counter() - t0)
  ms = [x * 1e3 for x in times]
  median = statistics.median(ms)
  return {
      "framework": "peft",
      "config": ("prompt" if args.num_transformer_submodules == 1 else
                 f"prompt_x{args.num_transformer_submodules}"),
      "num_transformer_submodules": args.num_transformer_submodules,
      "untied_lm_head": info["untied_lm_head"],
      "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
      "trainable_params": info["trainable_params"],
      "total_params": info["total_params"],
      "dropout_rate": args.dropout_rate,
      "optimizer": "transformers.optimization.Adafactor",
      "torch_threads": torch.get_num_threads(),
      "versions": {"torch": torch.__version__,
                   "transformers": transformers.__version__,
                   "peft": peft.__version__},
      "first_step_s": first_step_s,
      "median_ms": median, "min_ms": min(ms), "max_ms": max(ms),
      "steps_per_s": 1e3 / median, "times_ms": ms, "loss": loss,
      "rss_mib": {
          "start": rss_start / _MIB, "after_imports": rss_imported / _MIB,
          "after_state": rss_state / _MIB,
          "before_steps": rss_before_steps / _MIB,
          "peak_during_steps": sampler.peak / _MIB,
          "peak_process": memory.peak_rss_bytes() / _MIB},
  }


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--threads", type=int,
                      default=len(os.sched_getaffinity(0)))
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dropout_rate", type=float, default=0.1)
  parser.add_argument(
      "--num_transformer_submodules", type=int, default=1,
      help="PEFT's prompt rows per virtual token: 1 = one encoder prompt "
      "[100, 512], as ours; 2 = PEFT's default for SEQ_2_SEQ_LM, which "
      "allocates (and trains, unused by the prompt-tuning forward) a second "
      "100-row block.")
  for name, default in (("vocab_size", 32128), ("d_model", 512),
                        ("num_heads", 6), ("head_dim", 64), ("d_ff", 1024),
                        ("num_encoder_layers", 8), ("num_decoder_layers", 8),
                        ("batch_size", 8), ("inputs_length", 128),
                        ("prompt_length", 100), ("targets_length", 8)):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--json_out", required=True)
  args = parser.parse_args(argv)
  result = run(args)
  with open(args.json_out, "w") as f:
    json.dump(result, f)
  return 0


if __name__ == "__main__":
  sys.exit(main())
