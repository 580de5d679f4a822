r"""Peer benchmark: greedy decoding with Hugging Face PEFT's `generate`.

Run by `benchmarks/decode_time.py --peer_python=...` in the peer venv
(`benchmarks/requirements-peer.txt`); it imports only torch, transformers,
peft, the standard library and `benchmarks/peft_rte_race.py`'s model builder
(the same T5 1.1-small-shaped `T5ForConditionalGeneration`, random init,
untied lm_head, in `peft.get_peft_model` with a 100-token
`PromptTuningConfig`). Standalone:

  .venv-peer/bin/python benchmarks/peft_decode.py --json_out=/tmp/peft_dec.json

One timed call is `model.generate(input_ids=, attention_mask=,
max_new_tokens=8, min_new_tokens=8, do_sample=False, num_beams=1)` on a
random batch of 32 x 128 tokens (no padding), in `eval()` and
`torch.no_grad()`. `min_new_tokens` keeps EOS from ending it early, so all
8 decoder steps run, as in ours' fixed-length decode. The first call (warm
up) is timed apart.
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Optional, Sequence

import peft_rte_race  # benchmarks/peft_rte_race.py: build_model.


def run(args: argparse.Namespace) -> dict[str, Any]:
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  base, model, _, info = peft_rte_race.build_model(args)
  del base
  model.eval()
  gen = torch.Generator().manual_seed(0)
  input_ids = torch.randint(2, args.vocab_size,
                            (args.batch_size, args.inputs_length),
                            generator=gen)
  attention_mask = torch.ones_like(input_ids)

  def decode():
    with torch.no_grad():
      return model.generate(input_ids=input_ids, attention_mask=attention_mask,
                            max_new_tokens=args.new_tokens,
                            min_new_tokens=args.new_tokens, do_sample=False,
                            num_beams=1)

  t0 = time.perf_counter()
  out = decode()
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    out = decode()
    times.append(time.perf_counter() - t0)
  return {"framework": "peft", "first_s": first_s, "times_s": times,
          "median_s": statistics.median(times),
          "generated_shape": list(out.shape),
          "torch_threads": torch.get_num_threads(),
          "loadavg_end": os.getloadavg(), **info}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--inputs_length", type=int, default=128)
  parser.add_argument("--new_tokens", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int,
                      default=len(os.sched_getaffinity(0)))
  for name, default in (("vocab_size", 32128), ("d_model", 512),
                        ("num_heads", 6), ("head_dim", 64), ("d_ff", 1024),
                        ("num_encoder_layers", 8), ("num_decoder_layers", 8)):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--json_out", required=True)
  args = parser.parse_args(argv)
  args.dropout_rate = 0.0  # build_model reads it; eval() disables it anyway.
  row = run(args)
  with open(args.json_out, "w") as f:
    json.dump(row, f, indent=2)
  print(f"peft generate: median {row['median_s']:.3f} s over {args.repeats} "
        f"(first {row['first_s']:.3f} s), output {row['generated_shape']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
