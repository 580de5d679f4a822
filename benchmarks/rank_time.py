r"""Rank classification: one encoder pass per example vs one per label row.

    python benchmarks/rank_time.py [--tasks=rte,cb,copa] [--max_examples=N]

Scores the `<task>_rank` validation rows of RTE (2 labels), CB (3) and COPA
(2 choices) with a random T5 1.1-small-shaped prompt model (vocab 32128,
d_model 512, 6 heads x 64, d_ff 1024, 8 + 8 layers, gated GELU, untied
logits; a `--prompt_length` soft prompt, default 100), float32, one device,
through `training.evaluation.Evaluation.score` (what SeqIO's evaluator calls)
twice: the default encode-once path (`training.choice_scoring`,
`EncoderDecoderModel.score_choices`) and the row-per-label path
(`encode_once=False`, `score_batch`), side by side on the same rows. One
untimed call per path compiles every shape; then `--runs` (default 3) calls
of each, alternating; the medians and their ratio are printed with the
largest relative score difference and the examples whose chosen label
differs, and `os.getloadavg()` before and after each task. For scale, the
same two numbers for the row path against itself at half the batch size
(untimed): how much the row path's own scores move with the batch shape.
The SuperGLUE files and the vocabulary come from `../shared` unless
`PROMPT_TUNING_SUPER_GLUE_DIR` / `PROMPT_TUNING_VOCAB` say otherwise.
"""

import argparse
import os
import statistics
import sys
import time
from typing import Any, Optional, Sequence

TASKS = {"rte": "taskless_super_glue_rte_v102_rank",
         "cb": "taskless_super_glue_cb_v102_rank",
         "copa": "taskless_super_glue_copa_v102_rank"}
SMALL = {"vocab_size": 32128, "emb_dim": 512, "num_heads": 6, "head_dim": 64,
         "mlp_dim": 1024, "num_encoder_layers": 8, "num_decoder_layers": 8}


def _load() -> str:
  return "/".join(f"{x:.2f}" for x in os.getloadavg())


def build(prompt_length: int, lengths: dict[str, int]):
  """(model, random params, 1-device mesh, param shardings)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from prompt_tuning import partitioning  # pylint: disable=g-import-not-at-top
  from prompt_tuning.models import config as config_lib  # pylint: disable=g-import-not-at-top
  from prompt_tuning.models.model import EncoderDecoderModel  # pylint: disable=g-import-not-at-top
  from prompt_tuning.prompts.models import PromptTransformer  # pylint: disable=g-import-not-at-top

  config = config_lib.T5Config(**SMALL, mlp_activations=config_lib.GATED_GELU,
                               dropout_rate=0.0, logits_via_embedding=False)
  model = EncoderDecoderModel(PromptTransformer(config,
                                                prompt_length=prompt_length))
  boxed = model.init_shapes(lengths["inputs"], lengths["targets"])["params"]
  rng = np.random.default_rng(0)  # Drawn on the host: no compiled init.
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(size=s.shape).astype(np.float32)
                            / np.sqrt(s.shape[0] if s.ndim > 1 else 1)),
      nn.unbox(boxed))
  mesh = partitioning.create_mesh(devices=jax.devices()[:1])
  return model, params, mesh, partitioning.param_shardings(boxed, mesh)


def time_task(task: str, args: argparse.Namespace, built) -> dict[str, Any]:
  """Medians of `args.runs` scorings of `task`'s rows by each path."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from prompt_tuning.data import rank_classification  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import evaluation  # pylint: disable=g-import-not-at-top
  model, params, mesh, shardings = built
  num_choices = len(rank_classification.LABELS[task])
  num_rows = (None if args.max_examples is None
              else args.max_examples * num_choices)
  lengths = {"inputs": args.input_length, "targets": args.target_length}
  runs, datasets = {}, {}
  # Encode once; the row path; the row path at half the batch (untimed).
  for key, once, batch_size in ((True, True, args.batch_size),
                                (False, False, args.batch_size),
                                ("half", False, args.batch_size // 2)):
    runs[key] = evaluation.Evaluation(
        task, model, mesh, shardings, batch_size=batch_size,
        feature_lengths=lengths, num_examples=num_rows,
        length_buckets=args.length_buckets, encode_once=once)
    datasets[key] = runs[key].evaluator.cached_model_datasets[task]
  load_before = _load()
  scores, times = {}, {True: [], False: []}
  for key in runs:  # Compiles every shape.
    scores[key] = np.array([s for _, s in runs[key].score(params,
                                                          datasets[key])])
  for _ in range(args.runs):
    for once in (False, True):
      start = time.perf_counter()
      runs[once].score(params, datasets[once])
      times[once].append(time.perf_counter() - start)
  rows = len(scores[True])
  whole = rows // num_choices * num_choices
  chosen = {key: rank_classification.choose(
      s[:whole].reshape(-1, num_choices)) for key, s in scores.items()}

  def compare(key):  # (max relative difference, examples chosen otherwise)
    diff = np.max(np.abs(scores[key] - scores[False]) / np.abs(scores[False]))
    return float(diff), int(np.sum(chosen[key] != chosen[False]))
  row_s, once_s = (statistics.median(times[False]),
                   statistics.median(times[True]))
  return {"task": task, "labels": num_choices, "rows": rows,
          "row_s": row_s, "once_s": once_s, "ratio": row_s / once_s,
          "once_vs_rows": compare(True), "half_vs_rows": compare("half"),
          "load": f"{load_before} -> {_load()}"}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tasks", default="rte,cb,copa",
                      help=f"comma-separated, of {sorted(TASKS)}")
  parser.add_argument("--max_examples", type=int, default=None,
                      help="score only each split's first N examples")
  parser.add_argument("--batch_size", type=int, default=32,
                      help="rows per batch (the encode-once path batches "
                      "batch_size // labels examples)")
  parser.add_argument("--input_length", type=int, default=512)
  parser.add_argument("--target_length", type=int, default=8)
  parser.add_argument("--length_buckets", type=int, default=64,
                      help="LENGTH_BUCKETS (0: fixed shapes)")
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--runs", type=int, default=3)
  args = parser.parse_args(argv)
  args.length_buckets = args.length_buckets or None
  tasks = [TASKS[t] for t in args.tasks.split(",")]
  from prompt_tuning.data import locations  # pylint: disable=g-import-not-at-top
  from prompt_tuning.data import vocab  # pylint: disable=g-import-not-at-top
  from prompt_tuning.training import data  # pylint: disable=g-import-not-at-top
  os.environ.setdefault(locations.SUPER_GLUE_DIR_ENV, str(
      locations.shared_path("data", "super_glue")))
  os.environ.setdefault(vocab.VOCAB_ENV, str(
      locations.shared_path(*locations.VOCAB_IN_SHARED)))
  for task in tasks:
    data.get_task(task)  # Registers the tasks (clear error if unknown).
  print(f"load (1/5/15 min) at start: {_load()}; {os.cpu_count()} CPUs")
  built = build(args.prompt_length, {"inputs": args.input_length,
                                     "targets": args.target_length})
  print("| task | labels | rows | row per label s | encode once s | ratio "
        "| once vs rows: max rel. diff, other choices | rows at half batch "
        "vs rows: the same | load before -> after |")
  print("|---|---:|---:|---:|---:|---:|---|---|---|")
  for task in tasks:
    r = time_task(task, args, built)
    print(f"| {r['task']} | {r['labels']} | {r['rows']} | {r['row_s']:.2f} "
          f"| {r['once_s']:.2f} | {r['ratio']:.2f}x "
          f"| {r['once_vs_rows'][0]:.1e}, {r['once_vs_rows'][1]} "
          f"| {r['half_vs_rows'][0]:.1e}, {r['half_vs_rows'][1]} "
          f"| {r['load']} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
