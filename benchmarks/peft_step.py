r"""Peer benchmark: Hugging Face PEFT prompt tuning of a T5 1.1-small shape.

Run by `benchmarks/step_time.py --peer_python=...` in a separate venv that
has `benchmarks/requirements-peer.txt` (torch, transformers, peft) and not
this project; it imports only those and the standard library, and writes
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

_MIB = 1024.0 * 1024.0


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Builds the PEFT model and times `args.steps` optimizer steps."""
  load_start = os.getloadavg()
  rss_start = memory.current_rss_bytes()
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers.optimization import Adafactor  # pylint: disable=g-import-not-at-top
  rss_imported = memory.current_rss_bytes()

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=args.vocab_size, d_model=args.d_model, d_kv=args.head_dim,
      d_ff=args.d_ff, num_layers=args.num_encoder_layers,
      num_decoder_layers=args.num_decoder_layers, num_heads=args.num_heads,
      relative_attention_num_buckets=32, relative_attention_max_distance=128,
      dropout_rate=args.dropout_rate, layer_norm_epsilon=1e-6,
      feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
  base = transformers.T5ForConditionalGeneration(config)
  # transformers 5 always ties lm_head to the shared embedding (it reads
  # tie_word_embeddings=False only as "do not rescale the decoder output", as
  # T5 1.1 needs); give lm_head its own random matrix, as T5 1.1 has.
  if base.lm_head.weight.data_ptr() == base.shared.weight.data_ptr():
    base.lm_head.weight = torch.nn.Parameter(
        torch.randn_like(base.shared.weight) * args.d_model**-0.5)
  base.config.tie_word_embeddings = False
  peft_config = peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM,
      num_virtual_tokens=args.prompt_length,
      prompt_tuning_init=peft.PromptTuningInit.RANDOM,
      num_transformer_submodules=args.num_transformer_submodules)
  model = peft.get_peft_model(base, peft_config)
  model.train()
  untied = (model.base_model.lm_head.weight.data_ptr() !=
            model.base_model.shared.weight.data_ptr())
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer = Adafactor(
      trainable, lr=0.3, eps=(1e-30, 1e-3), clip_threshold=1.0,
      decay_rate=-0.8, beta1=None, weight_decay=1e-5, scale_parameter=False,
      relative_step=False, warmup_init=False)
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
      "untied_lm_head": untied,
      "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
      "trainable_params": sum(p.numel() for p in trainable),
      "total_params": sum(p.numel() for p in model.parameters()),
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
