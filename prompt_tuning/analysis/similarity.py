"""Task similarity between soft prompts, for choosing a transfer source.

SPoT (Vu et al. 2022) initialises a target task's prompt from a prompt
trained on a source task, and ranks candidate sources by how similar their
prompts are to a prompt trained briefly on the target. Two measures between
a SOURCE prompt `[L1, d]` and a TARGET prompt `[L2, d]` (lengths may differ,
widths may not):

  pooled   cosine similarity of the average-pooled prompts (mean over
           positions, `[d]` each). Symmetric; in [-1, 1].
  max      the average over the TARGET's positions of the largest cosine
           similarity to any SOURCE position. Asymmetric: it asks how well
           each target position is matched somewhere in the source; a
           source holding every target direction scores 1 even if it holds
           other directions too. In [-1, 1].

`similarity_matrix` computes either measure for N prompts (row = target,
column = source); `rank_sources` orders candidate sources for one target.
Pure numpy; the heat map imports matplotlib only when drawing.
"""

import dataclasses
import json
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from prompt_tuning import errors

POOLED = "pooled"
MAX = "max"
MEASURES = (POOLED, MAX)
DESCRIPTIONS = {
    POOLED: "cosine of the average-pooled prompts",
    MAX: "mean over target positions of the max cosine to any source "
         "position",
}


class SimilarityError(errors.ConfigError):
  """Prompts that cannot be compared (shape, width, zero vectors, count)."""


def _as_prompt(prompt: np.ndarray, name: str) -> np.ndarray:
  """`prompt` as float64 `[length, d]`, checked; SimilarityError if not."""
  value = np.asarray(prompt)
  if value.ndim != 2:
    raise SimilarityError(
        f"{name} has shape {list(value.shape)}; a prompt to compare is "
        "[length, embed] (pick one prompt of a bank, [num_prompts, length, "
        "embed], first).")
  if value.size == 0:
    raise SimilarityError(
        f"{name} is empty (shape {list(value.shape)}); give a prompt with "
        "at least one position and a non-zero width.")
  if not np.issubdtype(value.dtype, np.number):
    raise SimilarityError(f"{name} holds {value.dtype} values; a prompt is "
                          "numeric.")
  value = value.astype(np.float64)
  if not np.all(np.isfinite(value)):
    raise SimilarityError(f"{name} holds NaN or infinite values; its "
                          "training diverged or the file is damaged.")
  return value


def _check_widths(source: np.ndarray, target: np.ndarray,
                  source_name: str, target_name: str) -> None:
  if source.shape[-1] != target.shape[-1]:
    raise SimilarityError(
        f"{source_name} has embedding width {source.shape[-1]} but "
        f"{target_name} has {target.shape[-1]}: only prompts of models with "
        "the same embedding width can be compared.")


def _unit(vectors: np.ndarray, name: str, what: str) -> np.ndarray:
  """Rows of `vectors` `[n, d]` scaled to unit length; SimilarityError
  naming the first all-zero row (its cosine is undefined)."""
  norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
  zero = np.flatnonzero(norms[:, 0] == 0)
  if zero.size:
    raise SimilarityError(
        f"{what} {int(zero[0])} of {name} is all zeros, so its cosine "
        "similarity is undefined; leave that prompt out.")
  return vectors / norms


def _pooled_unit(prompt: np.ndarray, name: str) -> np.ndarray:
  """The unit-length mean of `prompt` `[L, d]` over positions: `[d]`."""
  mean = prompt.mean(axis=0, keepdims=True)
  try:
    return _unit(mean, name, "the average")[0]
  except SimilarityError:
    raise SimilarityError(
        f"The average-pooled {name} is all zeros, so its cosine similarity "
        "is undefined; use the max measure or leave that prompt out."
    ) from None


def pooled_cosine(source: np.ndarray, target: np.ndarray,
                  source_name: str = "the source prompt",
                  target_name: str = "the target prompt") -> float:
  """SPoT's cosine similarity of the average-pooled prompts (symmetric).

  Args:
    source: `[L1, d]`.
    target: `[L2, d]`.
    source_name: how to name `source` in errors.
    target_name: how to name `target` in errors.

  Returns:
    cos(mean_i source[i], mean_j target[j]), in [-1, 1].

  Raises:
    SimilarityError: for a prompt that is not `[L, d]`, is empty or holds
      NaN; different widths (naming both); an all-zero average.
  """
  source = _as_prompt(source, source_name)
  target = _as_prompt(target, target_name)
  _check_widths(source, target, source_name, target_name)
  value = _pooled_unit(source, source_name) @ _pooled_unit(target,
                                                           target_name)
  return float(np.clip(value, -1.0, 1.0))


def position_cosines(source: np.ndarray, target: np.ndarray,
                     source_name: str = "the source prompt",
                     target_name: str = "the target prompt") -> np.ndarray:
  """Cosine similarity of every target position to every source position.

  Args:
    source: `[L1, d]`.
    target: `[L2, d]`.
    source_name: how to name `source` in errors.
    target_name: how to name `target` in errors.

  Returns:
    `[L2, L1]`: entry [j, i] = cos(target[j], source[i]).

  Raises:
    SimilarityError: as `pooled_cosine`, and for an all-zero position.
  """
  source = _as_prompt(source, source_name)
  target = _as_prompt(target, target_name)
  _check_widths(source, target, source_name, target_name)
  cosines = (_unit(target, target_name, "position") @
             _unit(source, source_name, "position").T)
  return np.clip(cosines, -1.0, 1.0)


def max_cosine(source: np.ndarray, target: np.ndarray,
               source_name: str = "the source prompt",
               target_name: str = "the target prompt") -> float:
  """Mean over the TARGET's positions of the max cosine to any SOURCE
  position (asymmetric: `max_cosine(a, b) != max_cosine(b, a)` in general).

  Args:
    source: `[L1, d]`, the candidate source task's prompt.
    target: `[L2, d]`, the target task's prompt; each of its `L2` positions
      is matched with its most similar source position.
    source_name: how to name `source` in errors.
    target_name: how to name `target` in errors.

  Returns:
    (1 / L2) * sum_j max_i cos(target[j], source[i]), in [-1, 1].

  Raises:
    SimilarityError: as `position_cosines`.
  """
  cosines = position_cosines(source, target, source_name, target_name)
  return float(cosines.max(axis=1).mean())


def similarity(source: np.ndarray, target: np.ndarray, measure: str,
               source_name: str = "the source prompt",
               target_name: str = "the target prompt") -> float:
  """`pooled_cosine` or `max_cosine` by `measure` (one of `MEASURES`)."""
  if measure == POOLED:
    return pooled_cosine(source, target, source_name, target_name)
  if measure == MAX:
    return max_cosine(source, target, source_name, target_name)
  raise SimilarityError(f"Unknown similarity measure {measure!r}; use one "
                        f"of {', '.join(MEASURES)}.")


def _default_names(count: int,
                   names: Optional[Sequence[str]]) -> list[str]:
  if names is None:
    return [f"prompt {i}" for i in range(count)]
  names = [str(n) for n in names]
  if len(names) != count:
    raise SimilarityError(f"{count} prompts but {len(names)} names; give "
                          "one name per prompt.")
  duplicated = sorted({n for n in names if names.count(n) > 1})
  if duplicated:
    raise SimilarityError(f"The prompt names {duplicated} are used more "
                          "than once; give each prompt its own name.")
  return names


def _checked_all(prompts: Sequence[np.ndarray],
                 names: list[str]) -> list[np.ndarray]:
  """Each prompt `[L_i, d]` checked, with one width `d` for all."""
  checked = [_as_prompt(p, n) for p, n in zip(prompts, names)]
  for prompt, name in zip(checked[1:], names[1:]):
    _check_widths(checked[0], prompt, names[0], name)
  return checked


def similarity_matrix(prompts: Sequence[np.ndarray], measure: str = POOLED,
                      names: Optional[Sequence[str]] = None) -> np.ndarray:
  """The similarity of every pair of N prompts.

  Args:
    prompts: N >= 2 prompts `[L_i, d]` (lengths may differ, widths not).
    measure: one of `MEASURES`.
    names: N distinct names, for errors (default 'prompt <i>').

  Returns:
    `[N, N]` float64: entry [t, s] = similarity(source=prompts[s],
    target=prompts[t]): row = target, column = source. Symmetric for
    `POOLED`; the diagonal is 1 for both measures.

  Raises:
    SimilarityError: for fewer than 2 prompts, an unknown measure, and as
      `pooled_cosine` / `max_cosine` (naming the prompt).
  """
  if measure not in MEASURES:
    raise SimilarityError(f"Unknown similarity measure {measure!r}; use one "
                          f"of {', '.join(MEASURES)}.")
  if len(prompts) < 2:
    raise SimilarityError(
        f"A similarity matrix needs at least 2 prompts; got {len(prompts)}. "
        "Give more prompts.")
  names = _default_names(len(prompts), names)
  checked = _checked_all(prompts, names)
  if measure == POOLED:
    pooled = np.stack([_pooled_unit(p, n) for p, n in zip(checked, names)])
    matrix = pooled @ pooled.T  # [N, N], symmetric by construction.
  else:
    units = [_unit(p, n, "position") for p, n in zip(checked, names)]
    matrix = np.array([[(t @ s.T).max(axis=1).mean() for s in units]
                       for t in units])
  np.fill_diagonal(matrix, 1.0)  # Exactly 1, not 1 - rounding.
  return np.clip(matrix, -1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class RankedSource:
  """One candidate source for a target, with both measures."""
  name: str
  pooled: float  # pooled_cosine(source, target)
  max: float  # max_cosine(source, target)

  def score(self, measure: str) -> float:
    return self.pooled if measure == POOLED else self.max


def rank_sources(target: np.ndarray, sources: Mapping[str, np.ndarray],
                 by: str = POOLED, target_name: str = "the target prompt"
                 ) -> list[RankedSource]:
  """Candidate sources for `target`, most similar first.

  Args:
    target: `[L, d]`, the target task's prompt.
    sources: {name: `[L_s, d]`}, at least one.
    by: the measure to order by (one of `MEASURES`); ties go to the other
      measure, then to the order of `sources`.
    target_name: how to name `target` in errors.

  Returns:
    One `RankedSource` per source, both measures computed with `target` as
    the target.

  Raises:
    SimilarityError: for no sources, an unknown measure, and as
      `pooled_cosine` / `max_cosine`.
  """
  if by not in MEASURES:
    raise SimilarityError(f"Unknown similarity measure {by!r}; use one of "
                          f"{', '.join(MEASURES)}.")
  if not sources:
    raise SimilarityError(f"No source prompts to rank for {target_name}; "
                          "give at least one.")
  ranked = [RankedSource(name, pooled_cosine(p, target, name, target_name),
                         max_cosine(p, target, name, target_name))
            for name, p in sources.items()]
  other = MAX if by == POOLED else POOLED
  order = sorted(range(len(ranked)),
                 key=lambda i: (-ranked[i].score(by), -ranked[i].score(other),
                                i))
  return [ranked[i] for i in order]


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|")


def matrix_markdown(names: Sequence[str], matrix: np.ndarray,
                    measure: str) -> str:
  """A markdown table of `matrix` `[N, N]` (rows targets, columns sources),
  two decimals, with a caption line naming the measure."""
  lines = [f"Similarity ({measure}: {DESCRIPTIONS[measure]}); rows are "
           "targets, columns sources.", "",
           "| target \\ source | " + " | ".join(_cell(n) for n in names) +
           " |", "|---|" + "---:|" * len(names)]
  for name, row in zip(names, np.asarray(matrix)):
    lines.append(f"| {_cell(name)} | " +
                 " | ".join(f"{v:.2f}" for v in row) + " |")
  return "\n".join(lines) + "\n"


def ranking_markdown(target_name: str, ranked: Sequence[RankedSource],
                     by: str) -> str:
  """A markdown table of ranked sources with both measures."""
  lines = [f"Sources for target {target_name}, most similar first "
           f"(by {by}).", "",
           "| rank | source | pooled | max |", "|---:|---|---:|---:|"]
  for rank, r in enumerate(ranked, 1):
    lines.append(f"| {rank} | {_cell(r.name)} | {r.pooled:.4f} | "
                 f"{r.max:.4f} |")
  return "\n".join(lines) + "\n"


def to_json(names: Sequence[str], matrix: Optional[np.ndarray],
            measure: str, target: Optional[str] = None,
            ranked: Sequence[RankedSource] = ()) -> str:
  """The matrix (rows targets, columns sources) and, if given, the
  ranking for `target`, as indented JSON."""
  data = {"measure": measure, "description": DESCRIPTIONS[measure],
          "names": list(names), "rows": "target", "columns": "source"}
  if matrix is not None:
    data["matrix"] = np.asarray(matrix, np.float64).round(6).tolist()
  if target is not None:
    data["ranking"] = {
        "target": target, "by": measure,
        "sources": [{"rank": i, "name": r.name, "pooled": round(r.pooled, 6),
                     "max": round(r.max, 6)}
                    for i, r in enumerate(ranked, 1)]}
  return json.dumps(data, indent=1) + "\n"


def plot_heatmap(names: Sequence[str], matrix: np.ndarray, path: str,
                 measure: str, title: Optional[str] = None) -> str:
  """Draws `matrix` `[N, N]` (N >= 2) as a heat map PNG at `path` (rows
  targets, columns sources; colours span the off-diagonal values; the
  values are written in the cells up to 20 prompts). Returns `path`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  matrix = np.asarray(matrix, np.float64)
  count = len(names)
  side = max(4.0, 0.5 * count + 2.5)
  fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=120)
  # Colours span the off-diagonal values (the diagonal, 1, shows at the
  # top colour), so that close sources stay distinguishable.
  off = matrix[~np.eye(count, dtype=bool)]
  low, high = float(np.min(off)), float(np.max(off))
  if high - low < 1e-9:
    low, high = low - 0.5, high + 0.5
  image = ax.imshow(matrix, cmap="viridis", vmin=low, vmax=high)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  ax.set_xticks(range(count))
  ax.set_xticklabels(names, rotation=45, ha="right")
  ax.set_yticks(range(count))
  ax.set_yticklabels(names)
  ax.set_xlabel("source")
  ax.set_ylabel("target")
  if count <= 20:
    middle = (low + high) / 2
    for t in range(count):
      for s in range(count):
        ax.text(s, t, f"{matrix[t, s]:.2f}", ha="center", va="center",
                fontsize=7,
                color="black" if matrix[t, s] > middle else "white")
  ax.set_title(title or f"Prompt similarity ({measure})")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png")
  plt.close(fig)
  return path
