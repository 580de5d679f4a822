"""Training only some parameters: split by name and check the split.

Parameters are named by their '/'-joined paths (`prompt/prompt`,
`encoder/layers_0/attention/query/kernel`). A name is trainable when any of
the regular expressions in `patterns` matches it *fully* (`re.fullmatch`),
so `prompt/prompt` matches only that parameter and `.*prompt.*` any name
containing "prompt".

The model declares what it trains (`EncoderDecoderModel.trainable_patterns`:
the soft prompt, the deep prompt, the classification head, or their
combination); an explicit TRAINABLE_PATTERNS overrides it. The split is
computed once, checked, from the parameter shapes (`compute_split`), and the
resulting `ParamSplit` is what the state, the shardings and the checkpoints
use. The trainer keeps the two halves apart and differentiates with respect
to the trainable one only, so gradients and optimizer state never exist for
frozen leaves, which stay bit-identical:

    split = compute_split(shapes, model.trainable_patterns,
                          must_freeze=(r"token_embedder/.*",))
    trainable, frozen = split.split(params)
    ...
    params = merge_params(trainable, frozen)
"""

import dataclasses
import re
from typing import Any, Mapping, Sequence

import numpy as np

from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import prompt_names

Params = dict[str, Any]

# The soft prompt of `PromptTransformer` (single prompt or bank).
PROMPT_PATTERNS = (re.escape(prompt_names.SOFT_PROMPT),)


@dataclasses.dataclass(frozen=True)
class ParamSplit:
  """Which parameters train; computed once by `compute_split`, passed down.

  Attributes:
    patterns: the regexes the split came from.
    trainable: '/'-joined names of the trainable parameters.
    frozen: names of the others.
  """
  patterns: tuple[str, ...]
  trainable: tuple[str, ...]
  frozen: tuple[str, ...]

  def is_trainable(self, name: str) -> bool:
    return name in self._trainable_set

  @property
  def _trainable_set(self) -> frozenset[str]:
    return frozenset(self.trainable)

  def split(self, tree: Mapping[str, Any]) -> tuple[Params, Params]:
    """(trainable, frozen) halves of a tree named like the parameters (the
    parameters themselves, their shapes, shardings or specs).

    Raises:
      ValueError: when the tree's names are not the split's.
    """
    flat = param_tree.flatten_params(tree)
    if set(flat) != set(self.trainable) | set(self.frozen):
      extra = sorted(set(flat) - set(self.trainable) - set(self.frozen))
      missing = sorted((set(self.trainable) | set(self.frozen)) - set(flat))
      raise ValueError(f"The tree does not have the split's parameters: "
                       f"unknown {extra[:5]}, missing {missing[:5]}.")
    chosen = self._trainable_set
    return (param_tree.unflatten_params(
                {k: v for k, v in flat.items() if k in chosen}),
            param_tree.unflatten_params(
                {k: v for k, v in flat.items() if k not in chosen}))


def compute_split(params: Mapping[str, Any], patterns: Sequence[str],
                  must_freeze: Sequence[str] = (),
                  allow_all_trainable: bool = False) -> ParamSplit:
  """Checks that `patterns` split `params` (arrays or shapes) as intended
  (`check_split`) and returns the split."""
  chosen = check_split(params, patterns, must_freeze, allow_all_trainable)
  names = list(param_tree.flatten_params(params))
  chosen_set = set(chosen)
  return ParamSplit(patterns=tuple(patterns), trainable=tuple(chosen),
                    frozen=tuple(n for n in names if n not in chosen_set))


def _compile(patterns: Sequence[str]) -> list[re.Pattern[str]]:
  if isinstance(patterns, str):
    raise TypeError(f"patterns must be a sequence of regexes, got the string "
                    f"{patterns!r}; write ({patterns!r},).")
  return [re.compile(p) for p in patterns]


def is_trainable(name: str, patterns: Sequence[str]) -> bool:
  """Whether '/'-joined `name` fully matches one of `patterns`."""
  return any(p.fullmatch(name) for p in _compile(patterns))


def trainable_names(params: Mapping[str, Any],
                    patterns: Sequence[str]) -> list[str]:
  """Names of the leaves of `params` that `patterns` make trainable."""
  compiled = _compile(patterns)
  return [name for name in param_tree.flatten_params(params)
          if any(p.fullmatch(name) for p in compiled)]


def split_params(params: Mapping[str, Any], patterns: Sequence[str]
                 ) -> tuple[Params, Params]:
  """Splits a nested parameter dict into (trainable, frozen) nested dicts.

  Each output holds only its own leaves (no placeholders), so optimizer
  state built on the trainable half has nothing for frozen leaves.
  """
  flat = param_tree.flatten_params(params)
  chosen = set(trainable_names(params, patterns))
  trainable = {k: v for k, v in flat.items() if k in chosen}
  frozen = {k: v for k, v in flat.items() if k not in chosen}
  return (param_tree.unflatten_params(trainable),
          param_tree.unflatten_params(frozen))


def merge_params(trainable: Mapping[str, Any],
                 frozen: Mapping[str, Any]) -> Params:
  """Inverse of `split_params`; raises if a name appears in both halves."""
  flat_t = param_tree.flatten_params(trainable)
  flat_f = param_tree.flatten_params(frozen)
  both = sorted(set(flat_t) & set(flat_f))
  if both:
    raise ValueError(f"Parameters in both the trainable and frozen halves: "
                     f"{both}.")
  return param_tree.unflatten_params({**flat_f, **flat_t})


def check_split(params: Mapping[str, Any], patterns: Sequence[str],
                must_freeze: Sequence[str] = (),
                allow_all_trainable: bool = False) -> list[str]:
  """Asserts that `patterns` split `params` as intended; returns the trainable.

  Raises ValueError, listing names, when a pattern matches nothing, when
  nothing is trainable, when everything is (unless `allow_all_trainable`,
  for full fine-tuning), or when a name fully matching one of
  `must_freeze` (e.g. `token_embedder/.*`) would be trained.
  """
  names = list(param_tree.flatten_params(params))
  compiled = _compile(patterns)
  problems = []
  for pattern in compiled:
    if not any(pattern.fullmatch(n) for n in names):
      problems.append(f"pattern {pattern.pattern!r} matches no parameter")
  chosen = [n for n in names if any(p.fullmatch(n) for p in compiled)]
  if not chosen:
    problems.append("no parameter is trainable")
  elif len(chosen) == len(names) and not allow_all_trainable:
    problems.append("every parameter is trainable (nothing frozen)")
  guarded = _compile(must_freeze)
  leaked = [n for n in chosen if any(g.fullmatch(n) for g in guarded)]
  if leaked:
    problems.append(f"parameters that must stay frozen are trainable: "
                    f"{leaked}")
  if problems:
    raise ValueError(
        f"Trainable patterns {list(patterns)} split the parameters wrongly: "
        + "; ".join(problems) + f". Parameter names: {names[:10]}"
        + ("..." if len(names) > 10 else "."))
  return chosen


def count_params(params: Mapping[str, Any]) -> int:
  """Number of scalars in a tree of arrays or `ShapeDtypeStruct`s."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64)
                 for leaf in param_tree.flatten_params(params).values()))


def count_trainable(params: Mapping[str, Any],
                    patterns: Sequence[str]) -> int:
  """Number of trainable scalars; works on `jax.eval_shape` output."""
  return count_params(split_params(params, patterns)[0])
