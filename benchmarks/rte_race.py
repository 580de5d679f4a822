r"""End-to-end race on real RTE: prompt-tune N steps, then decode validation.

Each contestant runs in a fresh process and the wall clock is taken around
it, so imports, reading and tokenizing the data, building the (random) T5
1.1-small-shaped model, compilation, training and decoding all count:

  ours        `trainer.train` on `taskless_super_glue_rte_v102` (the real
              train split, 2490 examples, from ../shared/data/super_glue),
              batch 32, 100-token prompt, inputs 512 / targets 8, dropout
              0.1, the paper's Adafactor, random init, prompt-only
              checkpoint at the end; then `training.evaluation.Evaluation`
              greedy-decodes the 277 validation examples (batch 32) and
              computes accuracy. `--buckets` sets LENGTH_BUCKETS (64 by
              default; `none` for T5X's fixed 512-token batches; `64+group`
              also GROUP_BY_LENGTH, batches of similar lengths); the
              library's defaults otherwise (head-major attention,
              'unsafe_rbg' dropout keys): `--attention_layout=,t5x` adds a
              row with T5X's literal einsums, `--dtype=float32,bfloat16`
              one with bfloat16 products (float32 accumulation).
  peft        `benchmarks/peft_rte_race.py` in the peer venv: the same model
              shape, texts and tokenizer, Hugging Face's
              `DataCollatorForSeq2Seq` (each batch padded to its longest
              example), `generate(max_new_tokens=8)` for the validation split.

  . .venv/bin/activate
  python benchmarks/rte_race.py --peer_python=.venv-peer/bin/python \
      --steps=30 --repeats=2 --json_out=/tmp/rte_race.json

Rows alternate (ours, peft, ours, peft, ...); the table shows medians and
the 1-minute load average before and after each run.
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
from typing import Any, Optional, Sequence

REPO = pathlib.Path(__file__).resolve().parent.parent
RTE = "taskless_super_glue_rte_v102"
SHAPE = dict(vocab_size=32128, emb_dim=512, num_heads=6, head_dim=64,
             mlp_dim=1024, num_encoder_layers=8, num_decoder_layers=8)


def _parse_buckets(text: str) -> tuple[Any, bool]:
  """'none' | 'N' | 'N+group' -> (LENGTH_BUCKETS, GROUP_BY_LENGTH)."""
  text = text.lower()
  group = text.endswith("+group")
  text = text[:-len("+group")] if group else text
  return (None if text == "none" else int(text)), group


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
  """Our side, in this (fresh) process; returns phase times and results."""
  started = time.time()
  # pylint: disable=g-import-not-at-top
  from prompt_tuning.data import locations
  from prompt_tuning.data import vocab
  shared = locations.shared_dir()
  os.environ.setdefault(locations.SUPER_GLUE_DIR_ENV,
                        str(shared / "data" / "super_glue"))
  os.environ.setdefault(vocab.VOCAB_ENV,
                        str(locations.shared_path(*locations.VOCAB_IN_SHARED)))
  from prompt_tuning import partitioning
  from prompt_tuning.models import config as t5_config
  from prompt_tuning.models.model import EncoderDecoderModel
  from prompt_tuning.prompts.models import PromptTransformer
  from prompt_tuning.training import evaluation
  from prompt_tuning.training import run_settings
  from prompt_tuning.training import trainer
  # pylint: enable=g-import-not-at-top
  imported = time.time()
  cfg = t5_config.T5Config(
      **SHAPE, mlp_activations=t5_config.GATED_GELU,
      dropout_rate=args.dropout_rate, logits_via_embedding=False,
      dtype=args.dtype, **({"attention_layout": args.attention_layout}
                           if args.attention_layout else {}))
  model = EncoderDecoderModel(PromptTransformer(cfg,
                                                prompt_length=args.prompt_length))
  lengths = {"inputs": args.max_input_length, "targets": args.max_new_tokens}
  buckets, group = _parse_buckets(args.buckets)
  with tempfile.TemporaryDirectory() as model_dir:
    result = trainer.train(
        model=model, train_dataset_cfg=run_settings.DatasetConfig(
            RTE, lengths, "train", args.batch_size, length_buckets=buckets,
            group_by_length=group),
        train_steps=args.steps, model_dir=model_dir, seed=args.seed,
        log_period=1, **({"dropout_rng_impl": args.dropout_rng_impl}
                         if args.dropout_rng_impl else {}),
        checkpoint_cfg=run_settings.CheckpointConfig(period=args.steps),
        progress=False)
    trained = time.time()
    mesh = result.checks.mesh
    shardings = partitioning.param_shardings(result.checks.boxed_params, mesh)
    run = evaluation.Evaluation(
        RTE, model, mesh, shardings, batch_size=args.eval_batch_size,
        feature_lengths=lengths, split="validation",
        num_examples=args.eval_examples, length_buckets=buckets)
    metrics = run(result.state.params, args.steps)
    decoded = time.time()
  step_s = [1 / m["steps_per_second"] for _, m in result.history]
  return {
      "imports_s": imported - started,
      "train_s": trained - imported,
      "first_step_s": step_s[0],
      "step_median_s": statistics.median(step_s[1:] or step_s),
      # The steps alone (each from the end of the previous one, data
      # included); train_s minus this is setup: checks, state, first batch
      # pipeline, checkpoint.
      "steps_total_s": sum(step_s),
      "decode_s": decoded - trained,
      "padding_share": result.history[-1][1]["padding_share"],
      "final_loss": result.history[-1][1]["loss"],
      "accuracy": metrics[RTE]["accuracy"],
      "in_process_s": decoded - started,
  }


def _load() -> float:
  return os.getloadavg()[0]


def _contestant(cmd: list[str], label: str) -> dict[str, Any]:
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    load_before = _load()
    start = time.time()
    proc = subprocess.run(cmd + [f"--json_out={out.name}"], cwd=REPO,
                          capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode:
      raise RuntimeError(f"{label} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    row = json.loads(pathlib.Path(out.name).read_text())
  row.update(label=label, wall_s=wall, load_before=load_before,
             load_after=_load())
  return row


def _fmt(x: Optional[float], spec: str = ".1f") -> str:
  return "-" if x is None else format(x, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
  labels = list(dict.fromkeys(r["label"] for r in rows))
  cols = ("wall_s", "imports_s", "train_s", "first_step_s", "step_median_s",
          "decode_s", "padding_share", "accuracy")
  print("| contestant | runs | end to end s | imports s | train s | "
        "1st step s | step s (median) | decode s | padding | accuracy | "
        "load before/after |")
  print("|---" * 11 + "|")
  medians = {}
  for label in labels:
    mine = [r for r in rows if r["label"] == label]
    med = {c: statistics.median(r[c] for r in mine) if all(
        r.get(c) is not None for r in mine) else None for c in cols}
    medians[label] = med
    loads = ", ".join(f"{r['load_before']:.1f}/{r['load_after']:.1f}"
                      for r in mine)
    print(f"| {label} | {len(mine)} | {_fmt(med['wall_s'])} | "
          f"{_fmt(med['imports_s'])} | {_fmt(med['train_s'])} | "
          f"{_fmt(med['first_step_s'], '.2f')} | "
          f"{_fmt(med['step_median_s'], '.2f')} | {_fmt(med['decode_s'])} | "
          f"{_fmt(med['padding_share'] and 100 * med['padding_share'])}% | "
          f"{_fmt(med['accuracy'])} | {loads} |")
  peer = medians.get("peft")
  if peer:
    for label, med in medians.items():
      if label != "peft":
        print(f"{label} vs peft: end to end {peer['wall_s'] / med['wall_s']:.2f}x, "
              f"train {peer['train_s'] / med['train_s']:.2f}x, "
              f"decode {peer['decode_s'] / med['decode_s']:.2f}x")


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--eval_batch_size", type=int, default=32)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--max_input_length", type=int, default=512)
  parser.add_argument("--max_new_tokens", type=int, default=8)
  parser.add_argument("--dropout_rate", type=float, default=0.1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--eval_examples", type=int, default=None,
                      help="decode only the first N validation examples")
  parser.add_argument("--buckets", default="64",
                      help="ours' LENGTH_BUCKETS: an int, 'none' (fixed "
                           "shapes) or 'N+group' (also GROUP_BY_LENGTH); a "
                           "comma-separated list runs one row per value")
  parser.add_argument("--attention_layout", default="",
                      help="ours' ATTENTION_LAYOUT (default the library's, "
                           "head_major; t5x: bit-for-bit T5X); a "
                           "comma-separated list runs one row per value")
  parser.add_argument("--dropout_rng_impl", default="",
                      help="ours' dropout keys (default the library's, "
                           "unsafe_rbg; threefry2x32: T5X's masks)")
  parser.add_argument("--dtype", default="float32",
                      help="ours' T5Config.dtype: activations and matrix "
                           "products (bfloat16: bfloat16 operands, float32 "
                           "accumulation); a comma-separated list runs one "
                           "row per value")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--peer_python", default=None,
                      help="the peer venv's python (benchmarks/README.md)")
  parser.add_argument("--json_out", default=None)
  parser.add_argument("--worker", action="store_true",
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    row = run_ours(args)
    pathlib.Path(args.json_out).write_text(json.dumps(row))
    return 0

  common = [f"--steps={args.steps}", f"--batch_size={args.batch_size}",
            f"--eval_batch_size={args.eval_batch_size}",
            f"--prompt_length={args.prompt_length}",
            f"--max_input_length={args.max_input_length}",
            f"--max_new_tokens={args.max_new_tokens}",
            f"--dropout_rate={args.dropout_rate}", f"--seed={args.seed}"]
  if args.eval_examples:
    common.append(f"--eval_examples={args.eval_examples}")
  contestants = []
  for buckets in args.buckets.split(","):
    for layout in args.attention_layout.split(","):
      for dtype in args.dtype.split(","):
        label = f"ours_buckets_{buckets}" + (f"_{layout}" if layout else "") + (
            "" if dtype == "float32" else f"_{dtype}")
        contestants.append(([sys.executable, __file__, "--worker",
                             f"--buckets={buckets}",
                             f"--attention_layout={layout}",
                             f"--dtype={dtype}",
                             f"--dropout_rng_impl={args.dropout_rng_impl}"]
                            + common, label))
  if args.peer_python:
    contestants.append(([args.peer_python,
                         str(REPO / "benchmarks" / "peft_rte_race.py")]
                        + common, "peft"))
  print(f"RTE race: {args.steps} steps at batch {args.batch_size}, prompt "
        f"{args.prompt_length}, then decode validation "
        f"({args.eval_examples or 'all'}); load {_load():.2f}", flush=True)
  rows = []
  for repeat in range(args.repeats):
    for cmd, label in contestants:
      row = _contestant(cmd, label)
      rows.append(row)
      steps = row.get("steps_total_s") or sum(row.get("step_s") or [])
      print(f"  run {repeat + 1} {label}: {row['wall_s']:.1f} s "
            f"(train {row['train_s']:.1f} of which steps {steps:.1f}, "
            f"decode {row['decode_s']:.1f}, "
            f"load {row['load_before']:.1f}/{row['load_after']:.1f})",
            flush=True)
  print_table(rows)
  if args.json_out:
    pathlib.Path(args.json_out).write_text(json.dumps(rows, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
