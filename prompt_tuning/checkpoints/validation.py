"""Checks a loaded parameter tree against the shapes a model expects."""

import re
from typing import Any, Callable, Mapping, Sequence

from flax.core import meta
import jax
import numpy as np

from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import prompt_names

Params = param_tree.Params

# T5X / Flaxformer MLP input projection names: `wi` (one activation) or
# `wi_0`, `wi_1`, ... (gated).
_MLP_INPUT = re.compile(r"/mlp/(wi(?:_\d+)?)/kernel$")
_LAYER = re.compile(r"^(encoder|decoder)/layers_(\d+)/")


class ParamMismatchError(ValueError):
  """Loaded parameters do not match the names and shapes the model expects."""


def shape_of(leaf: Any) -> tuple[int, ...]:
  """Returns the shape of an array, ShapeDtypeStruct or shape tuple.

  Boxed leaves (e.g. `nn.LogicallyPartitioned` from a partitioned init) are
  unboxed first.
  """
  if isinstance(leaf, meta.AxisMetadata):
    leaf = leaf.unbox()
  if hasattr(leaf, "shape"):
    return tuple(int(d) for d in leaf.shape)
  if isinstance(leaf, (tuple, list)) and all(
      isinstance(d, (int, np.integer)) for d in leaf):
    return tuple(int(d) for d in leaf)
  raise TypeError(f"Cannot read a shape from {type(leaf).__name__}: {leaf!r}")


def _format_shape(shape: Sequence[int]) -> str:
  return "[" + ", ".join(str(d) for d in shape) + "]"


def _unwrap_params_collection(tree: Mapping[str, Any],
                              other: Mapping[str, Any]) -> Mapping[str, Any]:
  """Drops a top-level {'params': ...} wrapper (as `model.init` returns)."""
  if set(tree.keys()) == {"params"} and "params" not in other:
    return tree["params"]
  return tree


def _mlp_layout(names: Sequence[str]) -> set[str]:
  return {m.group(1) for m in map(_MLP_INPUT.search, names) if m}


def _layer_counts(names: Sequence[str]) -> dict[str, int]:
  counts: dict[str, int] = {}
  for m in map(_LAYER.match, names):
    if m:
      counts[m.group(1)] = max(counts.get(m.group(1), 0), int(m.group(2)) + 1)
  return counts


def _hints(expected: Mapping[str, tuple[int, ...]],
           loaded: Mapping[str, tuple[int, ...]]) -> list[str]:
  """Guesses which config fields explain the differences."""
  hints = []
  extra = [n for n in loaded if n not in expected]
  lacking = [n for n in expected if n not in loaded]
  extra_prompts = [f"{n}: {_format_shape(loaded[n])}"
                   for n in extra if prompt_names.is_prompt(n)]
  lacking_prompts = [f"{n}: {_format_shape(expected[n])}"
                     for n in lacking if prompt_names.is_prompt(n)]
  if extra_prompts:
    hints.append(prompt_names.prompt_fix(extra_prompts))
  if lacking_prompts:
    hints.append(prompt_names.missing_prompt_fix(lacking_prompts))
  only_prompts = (
      (extra_prompts or lacking_prompts) and
      len(extra_prompts) + len(lacking_prompts) == len(extra) + len(lacking)
      and all(expected[n] == loaded[n] for n in expected if n in loaded))
  if only_prompts:
    return hints  # Only prompts differ: model size and version are right.
  want_mlp, have_mlp = _mlp_layout(list(expected)), _mlp_layout(list(loaded))
  if want_mlp and have_mlp and want_mlp != have_mlp:
    hints.append(
        f"MLP layout: the checkpoint has {sorted(have_mlp)}, the model "
        f"expects {sorted(want_mlp)}. Set mlp_activations: ('relu',) for "
        "T5 1.0 (one `wi`), ('gelu', 'linear') for T5 1.1 / LM-adapted / "
        "Flan-T5 (`wi_0`, `wi_1`).")
  logits = param_tree.LOGITS
  if logits in expected and logits not in loaded:
    hints.append(
        "The checkpoint has no decoder/logits_dense: its output logits reuse "
        "the token embedding. Set logits_via_embedding=True (T5 1.0).")
  elif logits in loaded and logits not in expected:
    hints.append(
        "The checkpoint has a separate output projection "
        "decoder/logits_dense: set logits_via_embedding=False (T5 1.1).")
  want_layers, have_layers = _layer_counts(list(expected)), _layer_counts(
      list(loaded))
  for stack in ("encoder", "decoder"):
    want, have = want_layers.get(stack, 0), have_layers.get(stack, 0)
    if want != have:
      hints.append(f"The checkpoint has {have} {stack} layers, the model "
                   f"expects {want}: set num_{stack}_layers.")
  emb = param_tree.EMBEDDING
  if emb in expected and emb in loaded and expected[emb] != loaded[emb]:
    hints.append(
        f"Token embedding is {_format_shape(loaded[emb])} in the checkpoint, "
        f"{_format_shape(expected[emb])} in the model: check vocab_size and "
        "emb_dim (model size).")
  rel = "encoder/relpos_bias/rel_embedding"
  if rel in expected and rel in loaded and expected[rel] != loaded[rel]:
    hints.append(
        f"Relative position bias is [heads, buckets] = "
        f"{_format_shape(loaded[rel])} in the checkpoint, "
        f"{_format_shape(expected[rel])} in the model: check num_heads and "
        "relative_attention_num_buckets.")
  hints.append(
      "Make the model config (gin file / T5Config) match the checkpoint's "
      "version (T5 1.0 vs 1.1) and size (small, base, large, xl, xxl).")
  return hints


def check_params(
    expected_shapes: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    source: str,
    expected_source: str = "the model",
    name_hint: Callable[[str], str | None] | None = None,
) -> Params:
  """Checks `params` against `expected_shapes` and casts them to float32.

  Args:
    expected_shapes: nested dict whose leaves are shapes: tuples,
      `jax.ShapeDtypeStruct`s or arrays, possibly boxed with partitioning
      metadata, e.g. `jax.eval_shape(model.init, ...)`. A top-level
      {'params': ...} wrapper is dropped.
    params: nested dict of loaded arrays.
    source: where `params` came from, for the error message (e.g. the
      checkpoint path).
    expected_source: where `expected_shapes` came from (e.g. the config).
    name_hint: maps one of our parameter names to the checkpoint's own name
      for it (e.g. the Hugging Face tensor name), shown next to missing and
      mismatched parameters; None when there is no such name.

  Returns:
    `params` as a nested dict of float32 numpy arrays, in the order of
    `expected_shapes` (`jax.ShapeDtypeStruct` leaves of `params` are
    returned unchanged).

  Raises:
    ParamMismatchError: listing, by '/'-joined name, every parameter that is
      missing from `params`, unexpected in it, or of the wrong shape.
  """
  expected_shapes = _unwrap_params_collection(expected_shapes, params)
  expected = {name: shape_of(leaf) for name, leaf in
              param_tree.flatten_params(expected_shapes).items()}
  flat = param_tree.flatten_params(params)
  loaded = {name: shape_of(leaf) for name, leaf in flat.items()}

  def described(name: str) -> str:
    other = name_hint(name) if name_hint else None
    return f"{name} ({other})" if other else name

  missing = [n for n in expected if n not in loaded]
  unexpected = [n for n in loaded if n not in expected]
  mismatched = [n for n in expected
                if n in loaded and loaded[n] != expected[n]]
  if missing or unexpected or mismatched:
    lines = [f"Parameters from {source} do not match {expected_source}:"]
    if missing:
      lines.append(f"  {len(missing)} missing from the checkpoint:")
      lines += [f"    {described(n)}: expected {_format_shape(expected[n])}"
                for n in missing]
    if unexpected:
      lines.append(f"  {len(unexpected)} in the checkpoint but not expected:")
      lines += [f"    {n}: {_format_shape(loaded[n])}" for n in unexpected]
    if mismatched:
      lines.append(f"  {len(mismatched)} with the wrong shape:")
      lines += [f"    {described(n)}: checkpoint {_format_shape(loaded[n])}, "
                f"expected {_format_shape(expected[n])}" for n in mismatched]
    lines.append("How to fix:")
    lines += [f"  - {hint}" for hint in _hints(expected, loaded)]
    raise ParamMismatchError("\n".join(lines))
  return param_tree.unflatten_params(
      {name: flat[name] for name in expected}, _as_float32)


def _as_float32(leaf: Any) -> Any:
  """A float32 numpy array of `leaf`; shape-only leaves are kept as they are
  (so a checkpoint's shapes can be checked before its data is read)."""
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return leaf
  return np.asarray(leaf, dtype=np.float32)
