r"""Our exports loaded by transformers and PEFT, compared with our model.

Run in the peer venv (torch, transformers, peft; see requirements-peer.txt);
our side runs in subprocesses of the project's `.venv/bin/python`, so this
file never imports prompt_tuning:

  python3 -m venv .venv-peer && .venv-peer/bin/pip install -r benchmarks/requirements-peer.txt
  .venv-peer/bin/python benchmarks/interop_check.py \
      --markdown=benchmarks/results/interop_check.md

1. Forward: the README main job's frozen mini T5 (`main_job --build_only`
   prints its path) goes out with `python -m prompt_tuning.export --to=hf`,
   its learned SST-2 prompt (`<cache>/steering_*/sst2_prompt`) with
   `--to=peft`. transformers' `T5ForConditionalGeneration` (and PEFT's
   `PeftModel` for the prompt) then score SST-2 dev exactly as the main job
   does (`benchmarks/interop_ours.py sst2` gives our side and the texts):
   the taskless input `sentence: S` without and with the prompt, and the
   task-name input `sst2 sentence: S`. Compared: the tokenizer's ids, the
   teacher-forced logits of the gold label (every vocabulary entry), the
   greedy decodes (4 tokens) and their accuracy.
2. Reverse: a random tiny T5 made by transformers (T5 1.1-shaped: gated
   GELU, untied head; and T5 1.0-shaped: ReLU, tied and scaled head) gets a
   prompt trained by PEFT (a few Adam steps, PEFT's default 2 submodules),
   both saved with `save_pretrained`; our readers load the model and the
   adapter (`interop_ours.py logits`) and our logits are compared with
   PEFT's on padded batches.
"""

import argparse
import glob
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import numpy as np
import peft
import torch
import transformers

REPO = pathlib.Path(__file__).resolve().parent.parent
OURS = REPO / "benchmarks" / "interop_ours.py"
DECODE_LENGTH = 4
BATCH = 128
VARIANTS = (("no_prompt", "taskless input, no prompt", "taskless"),
            ("task_name", "task name (`sst2 sentence:`)", "task_name"),
            ("prompt", "taskless input + learned prompt", "taskless"))


def _run(cmd: list[str]) -> str:
  """Runs one of our commands; its stdout, or the failure with its log."""
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        check=False)
  if done.returncode:
    sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n"
             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
  return done.stdout


def _prompt_run(cache_dir: str, frozen: str) -> str:
  """The main job's prompt run trained on `frozen` (the newest if several)."""
  runs = []
  for run in glob.glob(os.path.join(cache_dir, "steering_*", "sst2_prompt")):
    for meta in glob.glob(os.path.join(run, "checkpoints", "*", "meta",
                                       "metadata")):
      with open(meta) as f:
        base = (json.load(f).get("frozen_base") or {}).get("path")
      if base and os.path.realpath(base) == os.path.realpath(frozen):
        runs.append((os.path.getmtime(meta), run))
  if not runs:
    sys.exit(f"No finished main-job prompt run on {frozen} under "
             f"{cache_dir}/steering_*/sst2_prompt; run the main job first.")
  return max(runs)[1]


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
  return [tokenizer(t).input_ids for t in texts]


def _hf_side(model: Any, ids: list[list[int]], targets: np.ndarray,
             ) -> tuple[np.ndarray, list[list[int]]]:
  """Teacher-forced logits [n, t, v] and greedy decodes (cut at EOS)."""
  logits, decodes = [], []
  for start in range(0, len(ids), BATCH):
    rows = ids[start:start + BATCH]
    width = max(len(r) for r in rows)
    enc = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
      enc[i, :len(r)] = torch.tensor(r)
    mask = (enc != 0).long()
    tgt = torch.from_numpy(targets[start:start + BATCH]).long()
    dec_in = torch.cat([torch.zeros((len(rows), 1), dtype=torch.long),
                        tgt[:, :-1]], dim=1)
    with torch.no_grad():
      out = model(input_ids=enc, attention_mask=mask, decoder_input_ids=dec_in)
      logits.append(out.logits.float().numpy())
      gen = model.generate(input_ids=enc, attention_mask=mask,
                           max_new_tokens=DECODE_LENGTH, do_sample=False,
                           num_beams=1)
    for row in gen[:, 1:].tolist():  # Drops the decoder start token.
      decodes.append(row[:row.index(1)] if 1 in row else
                     [t for t in row if t != 0])
  return np.concatenate(logits), decodes


def forward_check(args: argparse.Namespace, work: pathlib.Path
                  ) -> list[dict[str, Any]]:
  """Part 1; one row per variant plus a tokenizer row."""
  frozen = _run([args.our_python, "-m", "prompt_tuning.main_job",
                 "--build_only", f"--cache_dir={args.cache_dir}"]
                ).strip().splitlines()[-1]
  prompt_run = _prompt_run(args.cache_dir, frozen)
  print(f"frozen model {frozen}\nprompt run {prompt_run}", flush=True)
  hf_dir, adapter = work / "frozen_hf", work / "sst2_peft"
  _run([args.our_python, "-m", "prompt_tuning.export", "--to=hf",
        f"--checkpoint={frozen}", f"--output={hf_dir}",
        f"--vocab={args.vocab}"])
  _run([args.our_python, "-m", "prompt_tuning.export", "--to=peft",
        f"--prompt={prompt_run}", f"--base_model={hf_dir}",
        f"--output={adapter}"])
  ours_dir = work / "ours"
  started = time.time()
  _run([args.our_python, str(OURS), "sst2", f"--frozen={frozen}",
        f"--prompt_run={prompt_run}", f"--out={ours_dir}",
        f"--num_examples={args.num_examples}"])
  print(f"our side: {time.time() - started:.0f} s", flush=True)
  texts = json.loads((ours_dir / "texts.json").read_text())
  n = len(texts["targets"])
  tokenizer = transformers.T5Tokenizer.from_pretrained(hf_dir)
  width = max(len(t) for t in texts["target_ids"])
  targets = np.zeros((n, width), np.int64)
  for i, t in enumerate(texts["target_ids"]):
    targets[i, :len(t)] = t
  valid = targets != 0
  rows = []
  ids = {}
  for key in ("taskless", "task_name"):
    ids[key] = _tokenize(tokenizer, texts[key])
    same = sum(a == b for a, b in zip(ids[key], texts["ids"][key]))
    rows.append({"check": f"T5Tokenizer ids = ours ({key} inputs)",
                 "value": f"{same}/{n}"})
  same = sum(tokenizer(t).input_ids == ours for t, ours in
             zip(texts["targets"], texts["target_ids"]))
  rows.append({"check": "T5Tokenizer ids = ours (label strings)",
               "value": f"{same}/{n}"})
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
  prompted = peft.PeftModel.from_pretrained(
      transformers.T5ForConditionalGeneration.from_pretrained(hf_dir), adapter)
  for name, label, key in VARIANTS:
    model = prompted if name == "prompt" else base
    model.eval()
    started = time.time()
    # Our token ids as input: the tokenizer is compared separately above.
    hf_logits, decodes = _hf_side(model, texts["ids"][key], targets)
    ours = np.load(ours_dir / f"{name}.npz")
    diff = np.abs(hf_logits - ours["logits"])[valid]
    our_tokens = [r[:r.index(1)] if 1 in r else r
                  for r in ours["tokens"].tolist()]
    strings = tokenizer.batch_decode(decodes, skip_special_tokens=True)
    acc_hf = 100 * np.mean([s == t for s, t in zip(strings, texts["targets"])])
    acc_ours = 100 * np.mean([s == t for s, t in
                              zip(ours["predictions"], texts["targets"])])
    rows.append({
        "check": label, "max_logit_diff": float(diff.max()),
        "mean_logit_diff": float(diff.mean()),
        "same_greedy": f"{sum(a == b for a, b in zip(decodes, our_tokens))}"
                       f"/{n}",
        "accuracy_ours": acc_ours, "accuracy_hf": acc_hf,
        "hf_seconds": time.time() - started})
    print(rows[-1], flush=True)
  return rows


def _random_t5(kind: str, out: pathlib.Path) -> Any:
  torch.manual_seed(0)
  common = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                num_decoder_layers=2, num_heads=4, dropout_rate=0.0,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=20, decoder_start_token_id=0,
                pad_token_id=0, eos_token_id=1)
  if kind == "t5_1_1":
    config = transformers.T5Config(feed_forward_proj="gated-gelu",
                                   tie_word_embeddings=False, **common)
  else:
    config = transformers.T5Config(feed_forward_proj="relu",
                                   tie_word_embeddings=True, **common)
  model = transformers.T5ForConditionalGeneration(config)
  model.save_pretrained(out, safe_serialization=True)
  return model


def reverse_check(args: argparse.Namespace, work: pathlib.Path
                  ) -> list[dict[str, Any]]:
  """Part 2: PEFT-trained prompts read by us give PEFT's logits."""
  rows = []
  rng = np.random.default_rng(0)
  for kind, label in (("t5_1_1", "T5 1.1-shaped (gated GELU, untied)"),
                      ("t5_1_0", "T5 1.0-shaped (ReLU, tied, scaled)")):
    base_dir, adapter = work / f"random_{kind}", work / f"peft_{kind}"
    model = _random_t5(kind, base_dir)
    config = peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM",
                                     num_virtual_tokens=args.virtual_tokens)
    tuned = peft.get_peft_model(model, config)
    optimizer = torch.optim.Adam(
        [p for p in tuned.parameters() if p.requires_grad], lr=0.1)
    inputs = torch.from_numpy(rng.integers(2, 96, (8, 12))).long()
    labels = torch.from_numpy(rng.integers(2, 96, (8, 3))).long()
    tuned.train()
    for _ in range(args.peft_steps):
      loss = tuned(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                   labels=labels).loss
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
    tuned.save_pretrained(adapter)
    tuned.eval()
    # A padded batch: the rows have 5..12 real tokens, EOS last.
    enc = rng.integers(2, 96, (6, 12))
    lengths = np.array([12, 5, 9, 7, 12, 6])
    for i, n in enumerate(lengths):
      enc[i, n - 1], enc[i, n:] = 1, 0
    targets = rng.integers(2, 96, (6, 4))
    targets[:, -1] = 1
    dec_in = np.concatenate([np.zeros((6, 1), np.int64), targets[:, :-1]], 1)
    with torch.no_grad():
      theirs = tuned(input_ids=torch.from_numpy(enc),
                     attention_mask=torch.from_numpy((enc != 0).astype(
                         np.int64)),
                     decoder_input_ids=torch.from_numpy(dec_in)
                     ).logits.numpy()
    ids_file = work / f"ids_{kind}.npz"
    np.savez(ids_file, inputs=enc, decoder_inputs=dec_in, targets=targets)
    out = work / f"ours_{kind}.npz"
    _run([args.our_python, str(OURS), "logits", f"--checkpoint={base_dir}",
          f"--peft_adapter={adapter}", f"--ids={ids_file}", f"--out={out}"])
    ours = np.load(out)
    saved = tuned.get_prompt_embedding_to_save("default").numpy()
    rows.append({
        "check": f"PEFT prompt ({args.virtual_tokens} tokens, "
                 f"{args.peft_steps} steps, final loss {loss.item():.3f}) on "
                 f"a random {label}, read by us",
        "prompt_rows": f"{ours['prompt'].shape[0]} of {saved.shape[0]}",
        "prompt_equal": bool(np.array_equal(
            ours["prompt"], saved[:args.virtual_tokens])),
        "max_logit_diff": float(np.abs(ours["logits"] - theirs).max()),
        "logit_scale": float(np.abs(theirs).max())})
    print(rows[-1], flush=True)
  return rows


def markdown(forward: list[dict[str, Any]], reverse: list[dict[str, Any]],
             header: str) -> str:
  lines = [header, "", "| check | result |", "|---|---|"]
  for row in forward:
    if "value" in row:
      lines.append(f"| {row['check']} | {row['value']} |")
  lines += ["", "| SST-2 dev | max \\|logit diff\\| | mean \\|logit diff\\| | "
            "same greedy decode | accuracy ours | accuracy transformers/PEFT "
            "|", "|---|---:|---:|---:|---:|---:|"]
  for row in forward:
    if "max_logit_diff" in row:
      lines.append(
          f"| {row['check']} | {row['max_logit_diff']:.2e} | "
          f"{row['mean_logit_diff']:.2e} | {row['same_greedy']} | "
          f"{row['accuracy_ours']:.1f} | {row['accuracy_hf']:.1f} |")
  lines += ["", "| reverse | prompt rows read | equal to PEFT's | max \\|logit "
            "diff\\| | max \\|logit\\| |", "|---|---:|---|---:|---:|"]
  for row in reverse:
    lines.append(f"| {row['check']} | {row['prompt_rows']} | "
                 f"{row['prompt_equal']} | {row['max_logit_diff']:.2e} | "
                 f"{row['logit_scale']:.2f} |")
  return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--our_python", default=str(REPO / ".venv" / "bin" /
                                                  "python"))
  parser.add_argument("--cache_dir", default=os.path.expanduser(
      "~/.cache/prompt_tuning"))
  parser.add_argument("--vocab", default=str(
      REPO.parent / "shared" / "models" / "t5_vocab" / "spiece.model"))
  parser.add_argument("--num_examples", type=int, default=0,
                      help="First N dev sentences (0: all 872).")
  parser.add_argument("--virtual_tokens", type=int, default=6)
  parser.add_argument("--peft_steps", type=int, default=5)
  parser.add_argument("--markdown", default=None)
  parser.add_argument("--skip_forward", action="store_true")
  args = parser.parse_args(argv)
  torch.set_num_threads(2)
  with tempfile.TemporaryDirectory() as tmp:
    work = pathlib.Path(tmp)
    forward = [] if args.skip_forward else forward_check(args, work)
    reverse = reverse_check(args, work)
  header = ("# interop_check.py: our exports in transformers and PEFT\n\n"
            "`.venv-peer/bin/python benchmarks/interop_check.py` (see its "
            "docstring); "
            f"torch {torch.__version__}, transformers "
            f"{transformers.__version__}, peft {peft.__version__}; "
            f"{args.num_examples or 'all'} SST-2 dev sentences.")
  table = markdown(forward, reverse, header)
  print(table)
  if args.markdown:
    pathlib.Path(args.markdown).write_text(table)


if __name__ == "__main__":
  main()
