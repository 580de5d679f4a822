"""SuperGLUE leaderboard submission files from test-split predictions.

`submission_lines(benchmark, records)` turns the records `infer` writes
(`{"idx", "prediction", "postprocessed"}`) into the leaderboard's lines:
`{"idx", "label"}` with the label as text (or 0/1 for COPA), MultiRC nested
by paragraph and question, ReCoRD keyed by query; `SUBMISSION_FILES` names
each benchmark's file (`RTE.jsonl`, `BoolQ.jsonl`, `AX-b.jsonl`, ...).
"""

import collections
from typing import Any, Mapping, Sequence

from prompt_tuning.data import super_glue_schema as schema

# Leaderboard file name (the release's folder name) per SuperGLUE benchmark.
SUBMISSION_FILES: Mapping[str, str] = {
    b: schema.RELEASE_FOLDERS[schema.TFDS_CONFIGS[b]]
    for b in schema.BENCHMARKS}
# The leaderboard's label text per class id: the class names in lower case.
_CLASS_LABELS: Mapping[str, tuple[str, ...]] = {
    b: tuple(name.lower() for name in schema.CLASS_NAMES[config])
    for b, config in schema.TFDS_CONFIGS.items()
    if config in schema.CLASS_NAMES}


def submission_lines(benchmark: str,
                     records: Sequence[Mapping[str, Any]]) -> list[dict]:
  """SuperGLUE leaderboard lines for one benchmark's test predictions."""
  if benchmark == "multirc":
    grouped = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in records:
      idx, value = r["idx"], r["postprocessed"]
      label = value.get("value", value) if isinstance(value, dict) else value
      grouped[idx["paragraph"]][idx["question"]].append(
          {"idx": idx["answer"], "label": int(label == 1)})
    return [{"idx": p, "passage": {"questions": [
        {"idx": q, "answers": answers} for q, answers in sorted(qs.items())]}}
            for p, qs in sorted(grouped.items())]
  if benchmark == "record":
    return [{"idx": r["idx"]["query"] if isinstance(r["idx"], dict)
             else r["idx"], "label": r["prediction"]} for r in records]
  lines = []
  for r in records:
    value = r["postprocessed"]
    if benchmark == "copa":
      label = int(value) if value in (0, 1) else 0
    else:
      names = _CLASS_LABELS[benchmark]
      label = names[value] if isinstance(value, int) and 0 <= value < len(
          names) else names[-1]  # Unparseable: the last class.
    lines.append({"idx": r["idx"], "label": label})
  return lines
