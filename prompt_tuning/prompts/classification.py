"""A linear classification head on mean-pooled encoder states.

P-Tuning v2 classifies with a linear layer on the encoder's output instead of
decoding a verbaliser. Here that is a small module (`ClassificationHead`)
and its pooling; the loss and predictions over its logits are the model's
(`EncoderDecoderModel(objective='classification')`), against an int `label`
feature `[b]` with values in `[0, num_classes)`.

Shape legend: b batch, l length, e embed, c classes.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.models import layers

Array = jax.Array
DType = Any


def mean_pool(encoded: Array, mask: Array) -> Array:
  """Mean over real positions: `[b, l, e]`, mask `[b, l]` -> `[b, e]` (f32).

  A row with no real position pools to zeros.
  """
  mask = mask.astype(jnp.float32)[..., None]
  total = jnp.sum(encoded.astype(jnp.float32) * mask, axis=1)
  return total / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


class ClassificationHead(nn.Module):
  """`[b, l, e]` encoder states -> class logits `[b, c]` (float32).

  Attributes:
    num_classes: c.
    dtype: compute dtype of the projection.
    kernel_init: initializer of the `[e, c]` kernel.
  """
  num_classes: int
  dtype: DType = jnp.float32
  kernel_init: Callable[..., Array] = layers.default_kernel_init

  @nn.compact
  def __call__(self, encoded: Array, mask: Array) -> Array:
    """Mean-pools `encoded` `[b, l, e]` over `mask` `[b, l]`, then projects."""
    pooled = mean_pool(encoded, mask)
    logits = layers.Dense(self.num_classes, ("embed", "classes"), self.dtype,
                          self.kernel_init, name="dense")(pooled)
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                             ("classes",)),
        (self.num_classes,), jnp.float32)
    logits = logits.astype(jnp.float32) + bias
    return nn.with_logical_constraint(logits, ("batch", "classes"))

