r"""The report of `benchmarks/spot.sh` (soft prompt transfer on the mini T5).

    python benchmarks/spot_report.py --out_dir=/tmp/spot [--seeds=0,1]
        [--fraction=0.98]

Reads the runs spot.sh wrote under OUT_DIR -- `sources/<source>/` and
`targets/<target>/<init>_s<seed>/`, `<init>` being `class_labels` or a
source's name -- and writes OUT_DIR/spot.md (printed too), spot.json and
the heat maps similarity_pooled.png and similarity_max.png.

Per target and initialisation (means over the seeds, from each run's
`eval_metrics.jsonl`, the task's accuracy on its whole validation split):
the accuracy before training (step 0), the first evaluated step reaching
`--fraction` of the class-label baseline's final accuracy ("-" if none
does), the final accuracy, and the mean over all evaluations (the area
under the curve: how much a source helps, speed and end point together);
the last two with their standard deviation over the seeds.

Similarity (`prompt_tuning.analysis.similarity`): the matrix of the source
prompts and each target's baseline prompt (seed 0, its last step), for
both SPoT measures; for each target its candidate sources (the sources of
other tasks) ranked by each measure against the target's baseline prompt,
beside their order by mean accuracy; whether the most similar source is the
one that helped most, and Spearman's rank correlation of the two orders.
"""

import argparse
import json
import os
import pathlib
from typing import Any, Optional, Sequence

import numpy as np

from prompt_tuning.analysis import prompt_io
from prompt_tuning.analysis import similarity
from prompt_tuning.training import run_dir

BASELINE = "class_labels"


def curve(model_dir: pathlib.Path) -> dict[int, float]:
  """{step: accuracy} of a run's evaluations (its one `*/accuracy`)."""
  out = {}
  for record in run_dir.eval_records(str(model_dir)):
    keys = [k for k in record if k.endswith("/accuracy")]
    if len(keys) != 1:
      raise ValueError(f"{model_dir}: expected one accuracy per evaluation, "
                       f"found {keys}.")
    out[int(record["step"])] = float(record[keys[0]])
  if not out:
    raise ValueError(f"{model_dir} has no evaluations; run spot.sh first.")
  return out


def summary(curves: Sequence[dict[int, float]],
            threshold: float) -> dict[str, Any]:
  """Means over seeds of: step 0, steps to `threshold`, final, mean."""
  def reached(c):
    hits = [s for s in sorted(c) if c[s] >= threshold]
    return hits[0] if hits else None

  steps = [reached(c) for c in curves]
  finals = [c[max(c)] for c in curves]
  means = [float(np.mean(list(c.values()))) for c in curves]
  return {"step0": float(np.mean([c.get(0, np.nan) for c in curves])),
          "steps_to_threshold": (None if None in steps
                                 else float(np.mean(steps))),
          "final": float(np.mean(finals)), "final_std": float(np.std(finals)),
          "mean": float(np.mean(means)), "mean_std": float(np.std(means))}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
  """Spearman's rho of two score lists (no ties expected; NaN if < 2)."""
  if len(a) < 2:
    return float("nan")
  ra = np.argsort(np.argsort(a)).astype(float)
  rb = np.argsort(np.argsort(b)).astype(float)
  return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default="/tmp/spot")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--fraction", type=float, default=0.98)
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out_dir)
  seeds = [int(s) for s in args.seeds.split(",") if s]
  sources = sorted(p.name for p in (out / "sources").iterdir() if p.is_dir())
  targets = sorted(p.name for p in (out / "targets").iterdir() if p.is_dir())

  lines = ["# Soft prompt transfer on the frozen mini T5", "",
           f"Seeds {', '.join(map(str, seeds))}; accuracy on the whole "
           "validation split (%). 'steps to X' is the first evaluated step "
           f"at or above X = {args.fraction:g} x the class-label baseline's "
           "final accuracy; 'mean' averages every evaluation (step 0 "
           "included), the area under the curve; ± is the standard deviation "
           "over the seeds.", ""]
  report: dict[str, Any] = {"seeds": seeds, "fraction": args.fraction,
                            "sources": {}, "targets": {}}
  for source in sources:
    last = run_dir.eval_records(str(out / "sources" / source))[-1]
    report["sources"][source] = {k.split("/")[0]: v for k, v in last.items()
                                 if k.endswith("/accuracy")}
  lines += ["Sources (validation accuracy at the end, per task trained on):",
            "", "| source | accuracy |", "|---|---|"]
  lines += [f"| {s} | " + ", ".join(f"{t} {a:.1f}" for t, a in acc.items()) +
            " |" for s, acc in report["sources"].items()]
  lines.append("")

  prompts = {s: prompt_io.resolve_prompt(out / "sources" / s)
             for s in sources}
  for target in targets:
    base_dir = out / "targets" / target
    inits = [BASELINE] + [s for s in sources if s != target]
    curves = {i: [curve(base_dir / f"{i}_s{seed}") for seed in seeds]
              for i in inits}
    base_final = float(np.mean([c[max(c)] for c in curves[BASELINE]]))
    threshold = args.fraction * base_final
    rows = {i: summary(curves[i], threshold) for i in inits}
    prompts[f"{target} (target)"] = prompt_io.resolve_prompt(
        base_dir / f"{BASELINE}_s{seeds[0]}")
    lines += [f"## Target: {target}", "",
              f"| init | step 0 | steps to {threshold:.1f} | final | mean |",
              "|---|---:|---:|---:|---:|"]
    for i, r in rows.items():
      reach = ("-" if r["steps_to_threshold"] is None
               else f"{r['steps_to_threshold']:g}")
      lines.append(f"| {i} | {r['step0']:.1f} | {reach} | {r['final']:.1f} "
                   f"± {r['final_std']:.1f} | {r['mean']:.1f} ± "
                   f"{r['mean_std']:.1f} |")
    candidates = [s for s in sources if s != target]
    target_prompt = prompts[f"{target} (target)"]
    ranked = {m: similarity.rank_sources(
        target_prompt, {s: prompts[s] for s in candidates}, m,
        target_name=f"{target}'s baseline prompt")
              for m in similarity.MEASURES}
    by_help = sorted(candidates, key=lambda s: -rows[s]["mean"])
    lines += ["", f"Candidate sources for {target}: by help (mean accuracy) "
              f"{' > '.join(by_help)}."]
    verdicts = {}
    for measure, order in ranked.items():
      names = [r.name for r in order]
      rho = spearman([rows[s]["mean"] for s in candidates],
                     [next(r.score(measure) for r in order if r.name == s)
                      for s in candidates])
      verdicts[measure] = {"order": names, "top_is_best": names[0] ==
                           by_help[0], "spearman": rho}
      scores = ", ".join(f"{r.name} {r.score(measure):.3f}" for r in order)
      lines.append(f"By {measure} similarity: {scores}; most similar = most "
                   f"helpful: {'yes' if names[0] == by_help[0] else 'no'}; "
                   f"Spearman {rho:+.2f}.")
    lines.append("")
    report["targets"][target] = {"threshold": threshold, "rows": rows,
                                 "by_help": by_help, "similarity": verdicts}

  names = list(prompts)
  for measure in similarity.MEASURES:
    matrix = similarity.similarity_matrix([prompts[n] for n in names],
                                          measure, names)
    similarity.plot_heatmap(names, matrix,
                            os.fspath(out / f"similarity_{measure}.png"),
                            measure, title=f"Prompt similarity ({measure})")
    lines.append(similarity.matrix_markdown(names, matrix, measure))
    report[f"matrix_{measure}"] = {"names": names,
                                   "matrix": np.round(matrix, 4).tolist()}
  text = "\n".join(lines)
  print(text)
  (out / "spot.md").write_text(text)
  (out / "spot.json").write_text(json.dumps(report, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
