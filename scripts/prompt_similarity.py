r"""Task similarity between prompts and source retrieval (SPoT, Vu et al. 2022).

  python scripts/prompt_similarity.py \
    --prompts=/runs/boolq,/runs/cb,/runs/copa,/tmp/mnli.npy \
    --measure=pooled --target=cb \
    --markdown=/tmp/sim.md --json=/tmp/sim.json --heatmap=/tmp/sim.png

`--prompts` are `.npy` files or training runs' MODEL_DIRs (latest step, or
`--step`; `--subdir=best` or a path ending in `/best` reads the run's best
checkpoint). A bank `[num_prompts, length, embed]` counts as one prompt per
row, named `<name>[i]`. Names default to the file's stem or the run
directory's name; `--names` overrides them. All prompts must have the same
embedding width; lengths may differ.

Measures (`--measure`; rows of the matrix are targets, columns sources):
  pooled  cosine similarity of the average-pooled prompts (symmetric).
  max     mean over the TARGET's positions of the largest cosine similarity
          to any SOURCE position (asymmetric).

Prints the N x N matrix as markdown; with `--target` (a name among the
prompts, or another prompt's path) also the other prompts ranked as sources
for it, most similar first by `--measure`, with both scores. Writes the same
markdown (`--markdown`), JSON (`--json`) and a heat-map PNG (`--heatmap`).
"""

import os
import pathlib
from typing import Optional, Sequence

from absl import flags
import numpy as np

from prompt_tuning import cli
from prompt_tuning import paths

cli.quiet_startup(cli.is_verbose())
# pylint: disable=g-import-not-at-top,wrong-import-position  (quiet first)
from prompt_tuning.analysis import prompt_io
from prompt_tuning.analysis import similarity
from prompt_tuning.checkpoints import run_checkpoints


def _flags() -> flags.FlagValues:
  flag_values = flags.FlagValues()
  define = dict(flag_values=flag_values)
  flags.DEFINE_list("prompts", None, "Comma-separated .npy files or run "
                    "MODEL_DIRs (a '/best' suffix reads the run's best "
                    "checkpoint).", **define)
  flags.mark_flag_as_required("prompts", **define)
  flags.DEFINE_list("names", None, "One name per --prompts entry (default "
                    "the file stem or run directory name).", **define)
  flags.DEFINE_integer("step", None, "The runs' checkpoint step (default "
                       "the latest).", lower_bound=0, **define)
  flags.DEFINE_enum("subdir", run_checkpoints.CHECKPOINTS,
                    [run_checkpoints.CHECKPOINTS, run_checkpoints.BEST],
                    "Which checkpoints of a run to read.", **define)
  flags.DEFINE_enum("measure", similarity.POOLED, list(similarity.MEASURES),
                    "pooled: cosine of the average-pooled prompts; max: mean "
                    "over target positions of the max cosine to any source "
                    "position.", **define)
  flags.DEFINE_string("target", None, "Rank the other prompts as sources for "
                      "this one: a name among the prompts, or a path.",
                      **define)
  flags.DEFINE_string("markdown", None, "Write the printed tables here too.",
                      **define)
  flags.DEFINE_string("json", None, "Write the matrix (and ranking) as JSON "
                      "here.", **define)
  flags.DEFINE_string("heatmap", None, "Draw the matrix as a PNG here.",
                      **define)
  cli.define_verbose_flag(flag_values)
  return flag_values


def _is_best(path: pathlib.Path) -> bool:
  return (path.name == run_checkpoints.BEST and
          run_checkpoints.has_checkpoint(path.parent, run_checkpoints.BEST))


def load(spec: str, step: Optional[int], subdir: str) -> np.ndarray:
  """The prompt `[L, d]` (or bank `[N, L, d]`) at `spec`."""
  path = pathlib.Path(spec)
  if _is_best(path):
    return prompt_io.export_prompt(path.parent, step, prompt_io.SOFT_PROMPT,
                                   subdir=run_checkpoints.BEST)[0]
  if subdir == run_checkpoints.BEST and path.is_dir():
    return prompt_io.export_prompt(path, step, prompt_io.SOFT_PROMPT,
                                   subdir=run_checkpoints.BEST)[0]
  return prompt_io.resolve_prompt(spec, step)


def default_name(spec: str) -> str:
  """`rte` for `/x/rte.npy`, `/runs/rte` or `/runs/rte/best`."""
  path = pathlib.Path(os.path.normpath(spec))
  if _is_best(path):
    path = path.parent
  return path.stem if path.suffix == ".npy" else path.name


def _expand(name: str, prompt: np.ndarray) -> list[tuple[str, np.ndarray]]:
  """A bank `[N, L, d]` as N named prompts; a prompt `[L, d]` as itself."""
  if prompt.ndim == 3:
    return [(f"{name}[{i}]", prompt[i]) for i in range(prompt.shape[0])]
  return [(name, prompt)]


def main(argv: Sequence[str]) -> int:
  args = cli.parse_flags(argv, _flags(), __doc__)
  specs = [s for s in args.prompts if s]
  if not specs:
    raise cli.UsageError("--prompts is empty; give .npy files or run "
                         "MODEL_DIRs, comma-separated.")
  if args.names is not None and len(args.names) != len(specs):
    raise cli.UsageError(f"--names has {len(args.names)} names for "
                         f"{len(specs)} --prompts; give one per prompt.")
  base_names = args.names or [default_name(s) for s in specs]
  named = []
  for spec, name in zip(specs, base_names):
    named += _expand(name, load(spec, args.step, args.subdir))

  target = None
  if args.target:
    names = [n for n, _ in named]
    if args.target in names:
      target = args.target
    elif args.target in specs:
      target = base_names[specs.index(args.target)]
      if target not in names:
        raise cli.UsageError(f"--target {args.target} is a bank; name one "
                             f"of its prompts, e.g. --target={target}[0].")
    else:
      spec = paths.expand(args.target, "--target")
      target = default_name(spec)
      if target in names:
        raise cli.UsageError(f"--target {spec} would be named {target}, "
                             "which a --prompts entry already is; rename "
                             "one with --names or pass it by name.")
      extra = _expand(target, load(spec, args.step, args.subdir))
      if len(extra) != 1:
        raise cli.UsageError(f"--target {spec} is a bank; pass one prompt.")
      named += extra
  names = [n for n, _ in named]
  prompts = [p for _, p in named]

  matrix = similarity.similarity_matrix(prompts, args.measure, names)
  text = similarity.matrix_markdown(names, matrix, args.measure)
  ranked = []
  if target is not None:
    sources = {n: p for n, p in named if n != target}
    ranked = similarity.rank_sources(dict(named)[target], sources,
                                     args.measure, target_name=target)
    text += "\n" + similarity.ranking_markdown(target, ranked, args.measure)
  print(text, end="")
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(text)
  if args.json:
    with open(args.json, "w") as f:
      f.write(similarity.to_json(names, matrix, args.measure, target,
                                 ranked))
  if args.heatmap:
    similarity.plot_heatmap(names, matrix, paths.expand(args.heatmap,
                                                        "--heatmap"),
                            args.measure)
  return 0


if __name__ == "__main__":
  cli.run(main)
