r"""Peer side of the RTE race: Hugging Face PEFT prompt tuning, end to end.

Issue 13 item 4: prompt-tune a T5 1.1-small-shaped model (random weights) on
the real RTE train split for `--steps` steps at batch 32, then greedily decode
the whole validation split; wall clock from the start of this script
(imports included) to the last prediction. This is the peer done the usual
Hugging Face way:

* text: the project's taskless RTE format, `hypothesis: H premise: P` ->
  `entailment` / `not_entailment` (`prompt_tuning/data/super_glue.py`);
* tokenizer: `transformers.T5Tokenizer` built from the real T5 SentencePiece
  model (`spiece.model`, 100 extra ids), EOS appended, inputs truncated to
  `--max_input_length` tokens (EOS included, as seqio's
  `append_eos_after_trim`), targets to `--max_target_length`;
* input pipeline: a plain list of tokenized examples, a torch `DataLoader`
  (shuffled, `drop_last`, epochs cycled) whose `collate_fn` is
  `DataCollatorForSeq2Seq(padding=True, label_pad_token_id=-100)`: every
  batch padded to its own longest example (dynamic padding);
* model: `T5ForConditionalGeneration` of the T5 1.1-small shape, random init,
  lm_head untied, in `peft.get_peft_model` with `PromptTuningConfig(
  num_virtual_tokens=--prompt_length, RANDOM, num_transformer_submodules=1)`
  and `transformers.optimization.Adafactor`, all exactly as
  `benchmarks/peft_step.py` builds them;
* training: `model.train()`, forward with `labels`, `backward()`,
  `optimizer.step()`, `zero_grad(set_to_none=True)`;
* decoding: `model.eval()`, `torch.no_grad()`, `model.generate(input_ids=,
  attention_mask=, max_new_tokens=--max_new_tokens, do_sample=False,
  num_beams=1)` over the validation split in order, `--eval_batch_size` at a
  time (the last batch smaller), `batch_decode(skip_special_tokens=True)`,
  exact-match accuracy against the label strings (meaningless with random
  weights; reported anyway).

Runs in the peer venv (`benchmarks/requirements-peer.txt`), imports only
torch, transformers, peft, the standard library and `benchmarks/memory.py`;
never jax or prompt_tuning. Run by `benchmarks/rte_race.py`, or alone:

  .venv-peer/bin/python benchmarks/peft_rte_race.py --json_out=/tmp/peft_rte.json
"""

import time

_SCRIPT_START = time.perf_counter()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import argparse
import json
import os
import statistics
import sys
from typing import Any, Optional, Sequence

import memory  # benchmarks/memory.py (this script's directory is on sys.path)

_MIB = 1024.0 * 1024.0
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ("entailment", "not_entailment")


def _process_age_s() -> Optional[float]:
  """Seconds since this process was started (Linux /proc; 10 ms ticks)."""
  try:
    with open("/proc/self/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])  # field 22 of stat(5); 2 before the split
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


# Interpreter start-up before this script's first line ran.
_STARTUP_S = _process_age_s()


def _since_start() -> float:
  return time.perf_counter() - _SCRIPT_START


def _shared_dir() -> str:
  return os.environ.get("PROMPT_TUNING_SHARED",
                        os.path.join(os.path.dirname(_REPO_ROOT), "shared"))


def rte_input_text(row: dict) -> str:
  """The project's taskless RTE input: `hypothesis: H premise: P`."""
  return f"hypothesis: {row['hypothesis']} premise: {row['premise']}"


def read_rte(path: str, limit: Optional[int] = None) -> list[tuple[str, str]]:
  """(input text, label string) of each line of an RTE release jsonl file."""
  examples = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if limit is not None and len(examples) >= limit:
        break
      if not line.strip():
        continue
      row = json.loads(line)
      label = row["label"]
      if label not in LABELS:
        raise ValueError(f"{path}: unexpected RTE label {label!r}.")
      examples.append((rte_input_text(row), label))
  return examples


def load_tokenizer(vocab_file: str):
  """`transformers.T5Tokenizer` from a SentencePiece `.model` file.

  transformers 5's `T5Tokenizer(vocab_file=...)` silently builds a
  104-token placeholder vocabulary (it only converts the SentencePiece model
  inside `from_pretrained`), so the tokenizer is loaded from the model's
  directory, which must hold it as `spiece.model` (needs sentencepiece and
  protobuf).
  """
  import transformers
  directory = os.path.dirname(os.path.abspath(vocab_file))
  if os.path.basename(vocab_file) != "spiece.model":
    raise ValueError(f"{vocab_file}: T5Tokenizer.from_pretrained looks for "
                     "'spiece.model'; name the file so.")
  tokenizer = transformers.T5Tokenizer.from_pretrained(directory,
                                                       extra_ids=100)
  if len(tokenizer) != 32100 or tokenizer.eos_token_id != 1:
    raise RuntimeError(f"{vocab_file}: unexpected T5 vocabulary "
                       f"({len(tokenizer)} tokens, EOS {tokenizer.eos_token_id}).")
  return tokenizer


def tokenize(tokenizer, examples: Sequence[tuple[str, str]],
             max_input_length: int, max_target_length: int,
             with_labels: bool) -> list[dict[str, list[int]]]:
  """Tokenized features, one dict per example, not padded."""
  texts = [text for text, _ in examples]
  enc = tokenizer(texts, max_length=max_input_length, truncation=True)
  features = [{"input_ids": ids, "attention_mask": mask}
              for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
  if with_labels:
    targets = tokenizer(text_target=[label for _, label in examples],
                        max_length=max_target_length, truncation=True)
    for feature, ids in zip(features, targets["input_ids"]):
      feature["labels"] = ids
  return features


def build_model(args: argparse.Namespace):
  """(base, PEFT prompt model, Adafactor, info) of `args`' shape; also the
  step benchmark's (`peft_step.py`, with its `num_transformer_submodules`).
  `args.seed` seeds the random init."""
  import peft
  import torch
  import transformers
  from transformers.optimization import Adafactor
  torch.manual_seed(args.seed)
  config = transformers.T5Config(
      vocab_size=args.vocab_size, d_model=args.d_model, d_kv=args.head_dim,
      d_ff=args.d_ff, num_layers=args.num_encoder_layers,
      num_decoder_layers=args.num_decoder_layers, num_heads=args.num_heads,
      relative_attention_num_buckets=32, relative_attention_max_distance=128,
      dropout_rate=args.dropout_rate, layer_norm_epsilon=1e-6,
      feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
  base = transformers.T5ForConditionalGeneration(config)
  # transformers 5 ties lm_head to the shared embedding whatever the config
  # says (it reads tie_word_embeddings=False only as "do not rescale the
  # decoder output"); T5 1.1 has its own output matrix.
  if base.lm_head.weight.data_ptr() == base.shared.weight.data_ptr():
    base.lm_head.weight = torch.nn.Parameter(
        torch.randn_like(base.shared.weight) * args.d_model**-0.5)
  base.config.tie_word_embeddings = False
  peft_config = peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM,
      num_virtual_tokens=args.prompt_length,
      prompt_tuning_init=peft.PromptTuningInit.RANDOM,
      num_transformer_submodules=getattr(args, "num_transformer_submodules",
                                         1))
  model = peft.get_peft_model(base, peft_config)
  untied = (model.base_model.lm_head.weight.data_ptr() !=
            model.base_model.shared.weight.data_ptr())
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer = Adafactor(
      trainable, lr=0.3, eps=(1e-30, 1e-3), clip_threshold=1.0,
      decay_rate=-0.8, beta1=None, weight_decay=1e-5, scale_parameter=False,
      relative_step=False, warmup_init=False)
  info = {"untied_lm_head": untied,
          "trainable_params": sum(p.numel() for p in trainable),
          "total_params": sum(p.numel() for p in model.parameters())}
  return base, model, optimizer, info


def _cycle(loader):
  """Batches of `loader`, epoch after epoch (reshuffled each epoch)."""
  while True:
    yield from loader


def run(args: argparse.Namespace) -> dict[str, Any]:
  """The race: imports, data, model, `args.steps` steps, full decode."""
  phases: dict[str, float] = {}
  load_start = os.getloadavg()
  # tokenizers' Rust thread pool follows --threads too (read at first use).
  os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))

  t0 = time.perf_counter()
  import peft
  import torch
  import transformers
  phases["imports_s"] = time.perf_counter() - t0
  imported_at = _since_start()
  torch.set_num_threads(args.threads)

  # Data: read, format, tokenize; the DataLoaders are built below, after the
  # model (DataCollatorForSeq2Seq takes it), and timed with the data.
  t0 = time.perf_counter()
  data_dir = args.data_dir or os.path.join(_shared_dir(), "data",
                                           "super_glue")
  train_examples = read_rte(os.path.join(data_dir, "RTE", "train.jsonl"),
                            args.train_examples)
  eval_examples = read_rte(os.path.join(data_dir, "RTE", "val.jsonl"),
                           args.eval_examples)
  phases["read_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  vocab_file = args.vocab_file or os.path.join(_shared_dir(), "models",
                                               "t5_vocab", "spiece.model")
  tokenizer = load_tokenizer(vocab_file)
  phases["tokenizer_load_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  train_features = tokenize(tokenizer, train_examples, args.max_input_length,
                            args.max_target_length, with_labels=True)
  eval_features = tokenize(tokenizer, eval_examples, args.max_input_length,
                           args.max_target_length, with_labels=False)
  phases["tokenize_s"] = time.perf_counter() - t0

  t0 = time.perf_counter()
  base, model, optimizer, model_info = build_model(args)
  phases["model_build_s"] = time.perf_counter() - t0

  t0 = time.perf_counter()
  collator = transformers.DataCollatorForSeq2Seq(
      tokenizer, model=base, padding=True, label_pad_token_id=-100,
      return_tensors="pt")
  train_loader = torch.utils.data.DataLoader(
      train_features, batch_size=args.batch_size, shuffle=True,
      drop_last=True, collate_fn=collator,
      generator=torch.Generator().manual_seed(args.seed))
  eval_loader = torch.utils.data.DataLoader(
      eval_features, batch_size=args.eval_batch_size, shuffle=False,
      collate_fn=collator)
  phases["loaders_s"] = time.perf_counter() - t0
  phases["data_setup_s"] = (phases["read_s"] + phases["tokenizer_load_s"] +
                            phases["tokenize_s"] + phases["loaders_s"])
  if len(train_loader) == 0:
    raise ValueError(f"{len(train_features)} training examples make no batch "
                     f"of {args.batch_size}.")

  # Training.
  rss_before_train = memory.current_rss_bytes()
  tokens = {"inputs_real": 0, "inputs_padded": 0,
            "targets_real": 0, "targets_padded": 0}
  step_s, fetch_s, losses, input_lengths = [], [], [], []
  model.train()
  batches = _cycle(train_loader)
  t_train = time.perf_counter()
  for _ in range(args.steps):
    t0 = time.perf_counter()
    batch = next(batches)
    t1 = time.perf_counter()
    out = model(input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                decoder_input_ids=batch["decoder_input_ids"],
                labels=batch["labels"])
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    losses.append(float(out.loss.detach()))
    t2 = time.perf_counter()
    fetch_s.append(t1 - t0)
    step_s.append(t2 - t0)
    mask = batch["attention_mask"]
    tokens["inputs_real"] += int(mask.sum())
    tokens["inputs_padded"] += mask.numel()
    labels = batch["labels"]
    tokens["targets_real"] += int((labels != -100).sum())
    tokens["targets_padded"] += labels.numel()
    input_lengths.append(int(mask.shape[1]))
  phases["train_s"] = time.perf_counter() - t_train
  trained_at = _since_start()
  rss_after_train = memory.current_rss_bytes()

  # Decoding the validation split.
  model.eval()
  predictions, decode_batch_s, generated_lengths = [], [], []
  t_decode = time.perf_counter()
  with torch.no_grad():
    for batch in eval_loader:
      t0 = time.perf_counter()
      out = model.generate(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"],
                           max_new_tokens=args.max_new_tokens,
                           do_sample=False, num_beams=1)
      predictions.extend(tokenizer.batch_decode(out,
                                                skip_special_tokens=True))
      decode_batch_s.append(time.perf_counter() - t0)
      generated_lengths.append(int(out.shape[1]) - 1)  # minus decoder start
  phases["decode_s"] = time.perf_counter() - t_decode
  phases["end_to_end_s"] = _since_start()

  correct = sum(pred.strip() == label
                for pred, (_, label) in zip(predictions, eval_examples))
  truncated = sum(len(f["input_ids"]) >= args.max_input_length
                  for f in train_features + eval_features)
  later = step_s[1:]
  fed = tokens["inputs_padded"] + tokens["targets_padded"]
  real = tokens["inputs_real"] + tokens["targets_real"]
  return {
      # Flat fields in benchmarks/rte_race.py's row layout: imports_s from
      # script start; train_s from the end of imports to the last step (data,
      # model build, steps); padding_share over encoder + decoder positions
      # fed (the 100 prompt positions are not counted); in_process_s from
      # script start to the last prediction.
      "imports_s": imported_at,
      "train_s": trained_at - imported_at,
      "first_step_s": step_s[0] if step_s else None,
      "step_median_s": statistics.median(later or step_s) if step_s else None,
      "decode_s": phases["decode_s"],
      "padding_share": 1 - real / fed if fed else None,
      "final_loss": losses[-1] if losses else None,
      "in_process_s": phases["end_to_end_s"],
      "framework": "peft",
      "task": "rte",
      "steps": args.steps, "batch_size": args.batch_size,
      "eval_batch_size": args.eval_batch_size,
      "prompt_length": args.prompt_length,
      "max_input_length": args.max_input_length,
      "max_target_length": args.max_target_length,
      "max_new_tokens": args.max_new_tokens,
      "dropout_rate": args.dropout_rate, "seed": args.seed,
      "torch_threads": torch.get_num_threads(),
      "rayon_threads": os.environ.get("RAYON_NUM_THREADS"),
      "data_dir": data_dir, "vocab_file": vocab_file,
      "train_examples": len(train_features),
      "eval_examples": len(eval_features),
      "batches_per_epoch": len(train_loader),
      "epochs": args.steps / len(train_loader),
      "inputs_at_max_length": truncated,
      "versions": {"python": sys.version.split()[0],
                   "torch": torch.__version__,
                   "transformers": transformers.__version__,
                   "peft": peft.__version__},
      **model_info,
      "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
      "interpreter_startup_s": _STARTUP_S,
      "phases_s": phases,
      "median_step_s": statistics.median(later) if later else None,
      "min_step_s": min(later) if later else None,
      "max_step_s": max(later) if later else None,
      "step_s": step_s, "fetch_s": fetch_s, "losses": losses,
      "batch_input_lengths": input_lengths,
      "tokens": tokens,
      "input_padding_share": (1 - tokens["inputs_real"] /
                              tokens["inputs_padded"]
                              if tokens["inputs_padded"] else None),
      "target_padding_share": (1 - tokens["targets_real"] /
                               tokens["targets_padded"]
                               if tokens["targets_padded"] else None),
      "decode_batch_s": decode_batch_s,
      "generated_lengths": generated_lengths,
      "accuracy": 100.0 * correct / len(eval_examples) if eval_examples
                  else None,
      "predictions_head": predictions[:5],
      "rss_mib": {"before_train": rss_before_train / _MIB,
                  "after_train": rss_after_train / _MIB,
                  "peak_process": memory.peak_rss_bytes() / _MIB},
  }


def _table(r: dict[str, Any]) -> str:
  p = r["phases_s"]
  median = r["median_step_s"]
  rows = [
      ("interpreter start-up", r["interpreter_startup_s"]),
      ("imports (torch, transformers, peft)", p["imports_s"]),
      ("data: read + tokenizer + tokenize + loaders", p["data_setup_s"]),
      ("model build (T5 + PEFT + Adafactor)", p["model_build_s"]),
      (f"train {r['steps']} steps", p["train_s"]),
      ("  first step", r["first_step_s"]),
      ("  median later step", median),
      (f"decode {r['eval_examples']} examples", p["decode_s"]),
      ("end to end (script start)", p["end_to_end_s"]),
  ]
  lines = [f"PEFT RTE race: batch {r['batch_size']}, prompt "
           f"{r['prompt_length']}, {r['torch_threads']} threads, load "
           f"{r['loadavg_start'][0]:.2f} -> {r['loadavg_end'][0]:.2f}"]
  for name, value in rows:
    lines.append(f"  {name:<46} " +
                 (f"{'-':>8}" if value is None else f"{value:8.2f} s"))
  t = r["tokens"]
  lines.append(
      f"  input padding {100 * r['input_padding_share']:.1f}% "
      f"({t['inputs_real']} real of {t['inputs_padded']} tokens, batch "
      f"lengths {min(r['batch_input_lengths'])}-"
      f"{max(r['batch_input_lengths'])}); target padding "
      f"{100 * r['target_padding_share']:.1f}%"
      if t["inputs_padded"] else "  no training batches")
  accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.1f}"
  lines.append(f"  accuracy {accuracy} (random weights), peak RSS "
               f"{r['rss_mib']['peak_process']:.0f} MiB")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--data_dir", default=None,
      help="SuperGLUE release directory (default: $PROMPT_TUNING_SHARED, "
      "else ../shared beside the repository, + /data/super_glue).")
  parser.add_argument(
      "--vocab_file", default=None,
      help="T5 SentencePiece model, named spiece.model (default: the shared "
      "models/t5_vocab/spiece.model).")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--eval_batch_size", type=int, default=32)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--max_input_length", type=int, default=512)
  parser.add_argument("--max_target_length", type=int, default=8)
  parser.add_argument("--max_new_tokens", type=int, default=8)
  parser.add_argument("--dropout_rate", type=float, default=0.1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int,
                      default=len(os.sched_getaffinity(0)))
  parser.add_argument("--train_examples", type=int, default=None,
                      help="Use only the first N training examples.")
  parser.add_argument("--eval_examples", type=int, default=None,
                      help="Decode only the first N validation examples.")
  for name, default in (("vocab_size", 32128), ("d_model", 512),
                        ("num_heads", 6), ("head_dim", 64), ("d_ff", 1024),
                        ("num_encoder_layers", 8), ("num_decoder_layers", 8)):
    parser.add_argument(f"--{name}", type=int, default=default)
  parser.add_argument("--json_out", default=None)
  args = parser.parse_args(argv)
  if args.steps < 0 or args.batch_size < 1 or args.eval_batch_size < 1:
    parser.error("--steps must be >= 0 and batch sizes >= 1.")
  for name in ("train_examples", "eval_examples"):
    if getattr(args, name) is not None and getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1.")
  result = run(args)
  print(_table(result))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
