"""Nearest vocabulary tokens of each prompt position (paper Section 7).

For a prompt `[p, e]` and the frozen token embedding table `[v, e]`, each
position's top-k tokens by cosine similarity. The paper reads these to
interpret prompts: trained positions often sit near the task's class labels,
and several positions frequently share one nearest neighbour.

`neighbor_report` computes everything; `to_markdown` and `to_json` render it.
"""

import dataclasses
import json
from typing import Any, Callable, Optional, Sequence

import numpy as np

# Summary lines count label hits among this many neighbours (as the paper).
LABEL_TOP = 5


def cosine_top_k(prompt: np.ndarray, embedding: np.ndarray, k: int,
                 chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
  """Top-k rows of `embedding` by cosine similarity to each prompt row.

  Args:
    prompt: `[p, e]`.
    embedding: `[v, e]`.
    k: neighbours per position (at most v).
    chunk_size: vocabulary rows scored at once (bounds memory).

  Returns:
    (ids `[p, k]` int64, similarities `[p, k]` float32), most similar first;
    equal similarities keep the lower id first. Zero rows have similarity 0.
  """
  prompt = np.asarray(prompt, np.float64)
  embedding = np.asarray(embedding, np.float64)
  if prompt.ndim != 2 or embedding.ndim != 2:
    raise ValueError(f"Need a prompt [p, e] and a table [v, e]; got "
                     f"{list(prompt.shape)} and {list(embedding.shape)}.")
  if prompt.shape[1] != embedding.shape[1]:
    raise ValueError(f"Prompt width {prompt.shape[1]} differs from the "
                     f"embedding table's {embedding.shape[1]}.")
  k = min(k, embedding.shape[0])

  def unit(x):
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)

  query = unit(prompt)
  sims = np.concatenate(
      [query @ unit(embedding[i:i + chunk_size]).T
       for i in range(0, embedding.shape[0], chunk_size)], axis=1)
  # Stable sort on -similarity keeps lower ids first among ties.
  ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
  return ids, np.take_along_axis(sims, ids, axis=1).astype(np.float32)


def label_token_ids(labels: Sequence[str], encode: Any) -> list[int]:
  """The first SentencePiece id of each label string (as the paper counts).

  Args:
    labels: e.g. `super_glue.label_strings(task)`.
    encode: an `encode(text) -> ids` callable or an object with `encode`.
  """
  fn = getattr(encode, "encode", encode)
  ids = []
  for label in labels:
    pieces = list(fn(label))
    if not pieces:
      raise ValueError(f"Label {label!r} tokenises to nothing.")
    ids.append(int(pieces[0]))
  return ids


def piece_namer(vocabulary: Any) -> Callable[[int], str]:
  """`id -> readable piece` for a seqio SentencePiece vocabulary.

  Ids past the SentencePiece model (T5's extra ids and padding rows) are
  shown as `<extra_id_N>` or `<unused_N>`.
  """
  processor = vocabulary.tokenizer
  extra = getattr(vocabulary, "extra_ids", 0)
  base = vocabulary.vocab_size - extra

  def name(token_id: int) -> str:
    if token_id < base:
      return processor.id_to_piece(int(token_id))
    if token_id < base + extra:
      return f"<extra_id_{base + extra - 1 - token_id}>"
    return f"<unused_{token_id}>"
  return name


@dataclasses.dataclass
class NeighborReport:
  """Nearest neighbours of one prompt.

  Attributes:
    ids: `[p, k]` token ids, most similar first.
    similarities: `[p, k]` cosine similarities.
    pieces: `[p][k]` readable tokens.
    label_ids: first-piece ids of the class labels (may be empty).
    labels: the label strings.
    positions_with_label: positions with a label id among their first
      `LABEL_TOP` neighbours.
    shared_groups: `{nearest id: [positions]}` for nearest neighbours shared
      by two or more positions.
  """
  ids: np.ndarray
  similarities: np.ndarray
  pieces: list[list[str]]
  label_ids: list[int]
  labels: list[str]
  positions_with_label: list[int]
  shared_groups: dict[int, list[int]]

  @property
  def num_positions(self) -> int:
    return int(self.ids.shape[0])

  @property
  def num_sharing(self) -> int:
    """Positions whose nearest neighbour is also another's."""
    return sum(len(v) for v in self.shared_groups.values())

  def summary_lines(self) -> list[str]:
    p = self.num_positions
    lines = []
    if self.labels:
      lines.append(
          f"{len(self.positions_with_label)} of {p} positions have a class "
          f"label ({', '.join(self.labels)}) among their top-{LABEL_TOP} "
          "neighbours.")
    lines.append(
        f"{self.num_sharing} of {p} positions share their nearest neighbour "
        f"with another position ({len(self.shared_groups)} shared tokens).")
    return lines


def neighbor_report(prompt: np.ndarray, embedding: np.ndarray, k: int = 5,
                    namer: Optional[Callable[[int], str]] = None,
                    labels: Sequence[str] = (),
                    label_ids: Sequence[int] = ()) -> NeighborReport:
  """Top-k neighbours of every prompt position and the paper's two counts.

  Args:
    prompt: `[p, e]`.
    embedding: the frozen token embedding table `[v, e]`.
    k: neighbours per position (the label count always looks at the first
      `LABEL_TOP`, computing them if k is smaller).
    namer: `id -> text`; default `str(id)`.
    labels: class label strings, for the summary.
    label_ids: their first-piece ids (`label_token_ids`), aligned with
      `labels`.
  """
  namer = namer or str
  if len(labels) != len(label_ids):
    raise ValueError("labels and label_ids must align.")
  ids, sims = cosine_top_k(prompt, embedding, max(k, LABEL_TOP))
  label_set = set(int(i) for i in label_ids)
  with_label = [pos for pos in range(ids.shape[0])
                if label_set & set(ids[pos, :LABEL_TOP].tolist())]
  groups: dict[int, list[int]] = {}
  for pos, token in enumerate(ids[:, 0].tolist()):
    groups.setdefault(int(token), []).append(pos)
  shared = {t: v for t, v in groups.items() if len(v) > 1}
  ids, sims = ids[:, :k], sims[:, :k]
  pieces = [[namer(int(t)) for t in row] for row in ids.tolist()]
  return NeighborReport(ids=ids, similarities=sims, pieces=pieces,
                        label_ids=[int(i) for i in label_ids],
                        labels=list(labels), positions_with_label=with_label,
                        shared_groups=shared)


def _cell(piece: str, sim: float) -> str:
  piece = piece.replace("|", "\\|")
  return f"`{piece}` {sim:.2f}"


def to_markdown(report: NeighborReport) -> str:
  """One row per position: its neighbours with similarities; summary below."""
  k = report.ids.shape[1]
  head = "| pos | " + " | ".join(f"#{i + 1}" for i in range(k)) + " |"
  rule = "|---:|" + "---|" * k
  rows = [head, rule]
  for pos in range(report.num_positions):
    cells = [_cell(p, float(s)) for p, s in
             zip(report.pieces[pos], report.similarities[pos])]
    mark = "*" if pos in report.positions_with_label else ""
    rows.append(f"| {pos}{mark} | " + " | ".join(cells) + " |")
  lines = rows + [""]
  if report.labels:
    lines.append(f"`*` marks a class label among the top-{LABEL_TOP}.")
  lines += [f"- {line}" for line in report.summary_lines()]
  return "\n".join(lines) + "\n"


def to_json(report: NeighborReport) -> str:
  """The report as JSON: per-position neighbours and the summary counts."""
  return json.dumps({
      "positions": [
          {"position": pos,
           "neighbors": [{"id": int(t), "piece": p, "cosine": round(float(s),
                                                                    6)}
                         for t, p, s in zip(report.ids[pos].tolist(),
                                            report.pieces[pos],
                                            report.similarities[pos])]}
          for pos in range(report.num_positions)],
      "labels": [{"label": label, "first_piece_id": i}
                 for label, i in zip(report.labels, report.label_ids)],
      "positions_with_label": report.positions_with_label,
      "shared_nearest": {str(t): v for t, v in report.shared_groups.items()},
      "summary": report.summary_lines(),
  }, indent=2)
