"""Turns decoded model outputs and targets into what the metrics compare.

Each function has SeqIO's postprocessor signature
`fn(output, example=None, is_target=False)`: `output` is the decoded text,
`example` the pre-tokenized example (numpy, from the task's dataset) and
`is_target` says whether `output` is the target text. A prediction that is
not one of the label strings maps to -1, which every metric counts as wrong.
"""

from typing import Any, Mapping, Optional, Sequence

import numpy as np

INVALID = -1

# Words T5 drops before comparing a WSC answer with the candidate referent.
# T5's list: `its` is not in it, and no punctuation is stripped, so `dog.`
# and `its dog` do not name `dog`.
_WSC_DETERMINERS = frozenset({
    "a", "an", "each", "every", "few", "her", "his", "many", "much", "my",
    "our", "some", "that", "the", "their", "these", "this", "those", "which",
    "whose", "your",
})


def as_text(value: Any) -> str:
  """Decodes bytes / numpy strings; returns str unchanged."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8")
  return str(value)


def as_texts(values: Any) -> list[str]:
  """Decodes a sequence (list, numpy array) of strings."""
  return [as_text(v) for v in np.asarray(values, dtype=object).reshape(-1)]


def _idx(example: Mapping[str, Any], field: Optional[str] = None) -> int:
  """Reads `idx` (or `idx[field]`, also accepting flat `idx/field` keys)."""
  if field is None:
    return int(example["idx"])
  idx = example.get("idx")
  if isinstance(idx, Mapping):
    return int(idx[field])
  return int(example[f"idx/{field}"])


def class_id(output: Any, example: Optional[Mapping[str, Any]] = None,
             is_target: bool = False, *,
             class_names: Sequence[str]) -> int:
  """Index of the output in `class_names`, or -1 if it is none of them."""
  del example, is_target
  text = as_text(output).strip()
  return list(class_names).index(text) if text in class_names else INVALID


def as_float(output: Any, example: Optional[Mapping[str, Any]] = None,
             is_target: bool = False, *, default: float = -1.0) -> float:
  """The number the text spells (STS-B's score), `default` if it is none."""
  del example, is_target
  try:
    return float(as_text(output))
  except ValueError:
    return default


def multirc(output: Any, example: Mapping[str, Any],
            is_target: bool = False) -> dict:
  """True/False answer judgement, grouped by its (paragraph, question)."""
  return {
      "value": class_id(output, class_names=("False", "True")),
      "group": (_idx(example, "paragraph"), _idx(example, "question")),
  }


def answers_or_prediction(output: Any, example: Mapping[str, Any],
                          is_target: bool = False):
  """Targets: all gold `answers` of the example; predictions: the text."""
  if is_target:
    return as_texts(example["answers"])
  return as_text(output).strip()


def axg(output: Any, example: Mapping[str, Any],
        is_target: bool = False) -> dict:
  """RTE-style class id plus the example's gender pair.

  AX-g comes in minimal pairs that differ only in the pronoun's gender,
  stored as consecutive examples (idx 2k and 2k+1); TFDS keeps no pair id, so
  the pair is `idx // 2`.
  """
  return {
      "value": class_id(output, class_names=("entailment", "not_entailment")),
      "pair": _idx(example) // 2,
  }


def _wsc_content(text: str) -> str:
  """Lower-cased, stripped, single-space-split words minus determiners."""
  words = text.strip().lower().split(" ")
  return " ".join(w for w in words if w not in _WSC_DETERMINERS)


def wsc_simple(output: Any, example: Mapping[str, Any],
               is_target: bool = False) -> int:
  """WSC: does the answer name the example's candidate referent? (T5's rule)

  Targets: the example's label (1 if the candidate, `span1_text`, is the
  pronoun's referent). Predictions, compared with the candidate after both
  are lower-cased, stripped and cleared of determiners (words split on
  single spaces, punctuation kept):

  * -1 if nothing is left of the answer;
  * 0 if exactly one of the two has an apostrophe (`John` does not name
    `John's hat`, nor the other way round);
  * else 1 if the answer's words are a subset of the candidate's or the
    other way round (`fuzzy bunny` names `bunny`), 0 otherwise.
  """
  if is_target:
    return int(example["label"])
  predicted = _wsc_content(as_text(output))
  if not predicted:
    return INVALID
  candidate = _wsc_content(as_text(example["targets_pretokenized"]))
  if ("'" in predicted) != ("'" in candidate):
    return 0
  predicted_set = set(predicted.split(" "))
  candidate_set = set(candidate.split(" "))
  names_candidate = (predicted_set <= candidate_set
                     or candidate_set <= predicted_set)
  return int(names_candidate)
