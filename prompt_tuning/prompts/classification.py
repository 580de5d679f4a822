"""A linear classification head on mean-pooled encoder states.

P-Tuning v2 classifies with a linear layer on the encoder's output instead of
decoding a verbaliser. Here that is a small module (`ClassificationHead`) and
pure functions around its logits: pooling, loss and predictions. Batches
carry an int `label` feature `[b]` with values in `[0, num_classes)`.

Shape legend: b batch, l length, e embed, c classes.
"""

from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

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


def classification_loss(logits: Array, labels: Array
                        ) -> tuple[Array, dict[str, Array]]:
  """Softmax cross entropy over classes.

  Args:
    logits: `[b, c]`.
    labels: int `[b]`.

  Returns:
    (mean loss over the batch, metrics summed over the batch: `loss`,
    `num_examples`, `accuracy_correct`).
  """
  per_example = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  correct = jnp.sum(predict_classes(logits) == labels)
  metrics = {
      "loss": jnp.sum(per_example),
      "num_examples": jnp.asarray(labels.shape[0], jnp.float32),
      "accuracy_correct": correct.astype(jnp.float32),
  }
  return jnp.mean(per_example), metrics


def predict_classes(logits: Array) -> Array:
  """Predicted class ids `[b]` from logits `[b, c]`."""
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def classification_loss_fn(module: nn.Module, params: Any,
                           batch: Mapping[str, Array],
                           dropout_rng: Optional[Array] = None
                           ) -> tuple[Array, dict[str, Array]]:
  """`classification_loss` of `module.classify` on `batch`.

  `module` is a model with a `classify(encoder_input_tokens, *,
  enable_dropout)` method (e.g. `deep.DeepPromptTransformer` with
  `num_classes > 0`); `batch` needs `encoder_input_tokens` and `label`.
  Dropout is on iff `dropout_rng` is given.
  """
  rngs = None if dropout_rng is None else {"dropout": dropout_rng}
  logits = module.apply({"params": params}, batch["encoder_input_tokens"],
                        enable_dropout=dropout_rng is not None, rngs=rngs,
                        method="classify")
  return classification_loss(logits, batch["label"])
