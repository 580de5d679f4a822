"""Where a soft prompt goes in the embedded input, and how to take it out.

Each combination joins a prompt `[b, p, e]` and an embedded input `[b, l, e]`
with padding mask `[b, l]` (1 = real token) into `[b, p + l, e]` and a mask
`[b, p + l]` in which prompt positions are 1, so they attend and are
attended to like real tokens.

  prefix:              [P P P x x x 0 0]    (the paper's default)
  suffix:              [x x x P P P 0 0]
  prefix_after_first:  [x P P P x x 0 0]

`suffix` puts the prompt right after the last real token and moves the
padding after it, so the relative positions between the input and the prompt
do not depend on how much padding a batch carries (appending after the
padding would make them depend on it). It assumes the usual right-padded
inputs (real tokens first), which is what T5 feature converters produce;
packed inputs are not supported.

`remove_prompt` undoes the join on an encoder output of the joined length,
for models whose decoder should not see the prompt positions.
"""

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
Combination = Callable[[Array, Array, Array], tuple[Array, Array]]

PREFIX = "prefix"
SUFFIX = "suffix"
PREFIX_AFTER_FIRST = "prefix_after_first"


def _check(prompt: Array, embedded: Array, mask: Array) -> None:
  if (prompt.ndim != 3 or embedded.ndim != 3 or mask.ndim != 2 or
      prompt.shape[0] != embedded.shape[0] or
      prompt.shape[2] != embedded.shape[2] or
      mask.shape != embedded.shape[:2]):
    raise ValueError(f"Cannot join prompt {prompt.shape} to input "
                     f"{embedded.shape} with mask {mask.shape}; expected "
                     "[b, p, e], [b, l, e] and [b, l].")


def prefix(prompt: Array, embedded: Array, mask: Array
           ) -> tuple[Array, Array]:
  """`[P, x]`: prompt `[b, p, e]` before input `[b, l, e]`."""
  _check(prompt, embedded, mask)
  ones = jnp.ones(prompt.shape[:2], mask.dtype)
  return (jnp.concatenate([prompt.astype(embedded.dtype), embedded], axis=1),
          jnp.concatenate([ones, mask], axis=1))


def prefix_after_first(prompt: Array, embedded: Array, mask: Array
                       ) -> tuple[Array, Array]:
  """`[x_0, P, x_1...]`: the prompt after the first input position."""
  _check(prompt, embedded, mask)
  ones = jnp.ones(prompt.shape[:2], mask.dtype)
  joined = jnp.concatenate(
      [embedded[:, :1], prompt.astype(embedded.dtype), embedded[:, 1:]], 1)
  return joined, jnp.concatenate([mask[:, :1], ones, mask[:, 1:]], axis=1)


def _suffix_sources(num_real: Array, length: int, prompt_length: int
                    ) -> Array:
  """For each joined position, its index in `[input ; prompt]`, `[b, l + p]`.

  `num_real` `[b]` counts each row's real tokens.
  """
  j = jnp.arange(length + prompt_length)[None, :]
  n = num_real[:, None]
  return jnp.where(j < n, j,
                   jnp.where(j < n + prompt_length, length + j - n,
                             j - prompt_length))


def suffix(prompt: Array, embedded: Array, mask: Array
           ) -> tuple[Array, Array]:
  """`[x, P, padding]`: the prompt right after each row's last real token."""
  _check(prompt, embedded, mask)
  length, prompt_length = embedded.shape[1], prompt.shape[1]
  num_real = jnp.sum(mask > 0, axis=1).astype(jnp.int32)
  sources = _suffix_sources(num_real, length, prompt_length)
  both = jnp.concatenate([embedded, prompt.astype(embedded.dtype)], axis=1)
  both_mask = jnp.concatenate(
      [mask, jnp.ones(prompt.shape[:2], mask.dtype)], axis=1)
  return (jnp.take_along_axis(both, sources[:, :, None], axis=1),
          jnp.take_along_axis(both_mask, sources, axis=1))


COMBINATIONS: dict[str, Combination] = {
    PREFIX: prefix,
    SUFFIX: suffix,
    PREFIX_AFTER_FIRST: prefix_after_first,
}


def get_combination(placement: str) -> Combination:
  """The combination function named `placement` (see `COMBINATIONS`)."""
  try:
    return COMBINATIONS[placement]
  except KeyError:
    raise ValueError(f"Unknown prompt placement {placement!r}; use one of "
                     f"{sorted(COMBINATIONS)}.") from None


def remove_prompt(encoded: Array, joined_mask: Array, prompt_length: int,
                  placement: str) -> tuple[Array, Array]:
  """Drops the prompt positions again: `[b, p + l, e]` -> `[b, l, e]`.

  Args:
    encoded: an output aligned with the joined input, `[b, p + l, e]`.
    joined_mask: the joined mask `[b, p + l]` the combination returned.
    prompt_length: p.
    placement: the combination that joined them.

  Returns:
    (`[b, l, e]` at the input's positions, the input's mask `[b, l]`).
  """
  p = prompt_length
  if placement == PREFIX:
    return encoded[:, p:], joined_mask[:, p:]
  if placement == PREFIX_AFTER_FIRST:
    return (jnp.concatenate([encoded[:, :1], encoded[:, 1 + p:]], axis=1),
            jnp.concatenate([joined_mask[:, :1], joined_mask[:, 1 + p:]], 1))
  if placement == SUFFIX:
    length = encoded.shape[1] - p
    num_real = jnp.sum(joined_mask > 0, axis=1).astype(jnp.int32) - p
    i = jnp.arange(length)[None, :]
    positions = jnp.where(i < num_real[:, None], i, i + p)
    return (jnp.take_along_axis(encoded, positions[:, :, None], axis=1),
            jnp.take_along_axis(joined_mask, positions, axis=1))
  get_combination(placement)  # Raises for unknown names.
  raise AssertionError(placement)
