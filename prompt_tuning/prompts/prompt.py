"""The soft prompt: a trainable `[prompt_length, embed]` matrix, or a bank.

`Prompt(length, embed_dim, initializer)` owns one parameter named `prompt`,
so as the `prompt` child of a model its path is `prompt/prompt`:

  single prompt  [p, e]     logical axes ('prompt', 'embed')
  bank           [n, p, e]  logical axes ('prompts', 'prompt', 'embed')

A bank serves batches that mix tasks (or ensemble members): each example
picks its prompt with an int `prompt_index` `[b]` (Lester et al. 2021,
Figure 2 and Section 7's prompt ensembling).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning.prompts import initializers

Array = jax.Array


class Prompt(nn.Module):
  """Returns each example's prompt, `[b, p, e]`.

  Attributes:
    length: p, the number of prompt positions (0 is allowed).
    embed_dim: e, the model's embedding width.
    initializer: a `PromptInitializer`; called with the key, the parameter
      shape and the `embedding` table handed to `__call__`.
    num_prompts: None for a single prompt shared by the batch; n for a bank.
    dtype: dtype of the returned prompt (the parameter is float32).
  """
  length: int
  embed_dim: int
  initializer: initializers.PromptInitializer = initializers.random_uniform()
  num_prompts: Optional[int] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, batch_size: int, prompt_index: Optional[Array] = None,
               embedding: Optional[Array] = None) -> Array:
    """The prompts of a batch.

    Args:
      batch_size: b.
      prompt_index: `[b]` int, required for a bank, rejected otherwise. While
        initialising a bank it may be omitted (slot 0 is used).
      embedding: the token embedding table `[vocab, embed]`, given to the
        initialiser (only read at initialisation).

    Returns:
      `[b, p, e]` in `dtype`.
    """
    if self.num_prompts is None:
      shape, axes = (self.length, self.embed_dim), ("prompt", "embed")
    else:
      shape = (self.num_prompts, self.length, self.embed_dim)
      axes = ("prompts", "prompt", "embed")
    init = nn.with_logical_partitioning(self.initializer, axes)
    prompt = self.param("prompt", init, shape, embedding)
    prompt = jnp.asarray(prompt, self.dtype)
    if self.num_prompts is None:
      if prompt_index is not None:
        raise ValueError("A prompt_index was given but this Prompt holds a "
                         "single prompt; set num_prompts for a bank.")
      return jnp.broadcast_to(prompt[None], (batch_size,) + shape)
    if prompt_index is None:
      if not self.is_initializing():
        raise ValueError(f"This Prompt is a bank of {self.num_prompts} "
                         "prompts: give each example's prompt_index [b] "
                         "(e.g. a 'prompt_index' batch feature).")
      prompt_index = jnp.zeros((batch_size,), jnp.int32)
    if prompt_index.shape != (batch_size,):
      raise ValueError(f"prompt_index has shape {prompt_index.shape}, "
                       f"expected [{batch_size}].")
    return jnp.take(prompt, prompt_index.astype(jnp.int32), axis=0)
