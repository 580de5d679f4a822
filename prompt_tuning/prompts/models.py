"""`PromptTransformer`: T5 with a soft prompt joined to the embedded input.

Only the input step changes: `embed_inputs` embeds the tokens as the base
model does, then joins the prompt (`combine.py`) to the embedding and mask.
The encoder's dropout then acts on the joined embedding, and the decoder's
cross-attention reads the longer encoder output through its mask, unless
`remove_prompt_from_output` drops the prompt positions first.

Parameters are the base model's plus `prompt/prompt` (`[p, e]`, or
`[n, p, e]` for a bank); train only that one with
`prompt_tuning.prompts.freezing`.
"""

from typing import Optional

import jax

from prompt_tuning.models import t5
from prompt_tuning.prompts import combine
from prompt_tuning.prompts import freezing
from prompt_tuning.prompts import initializers
from prompt_tuning.prompts import prompt as prompt_lib

Array = jax.Array


class PromptTransformer(t5.Transformer):
  """A T5 `Transformer` whose encoder input carries a trainable prompt.

  Attributes:
    config: the T5Config (inherited).
    prompt_length: p; 0 gives exactly the base model.
    prompt_init: a `PromptInitializer` (see `initializers.py`). At `init` it
      sees this model's (then random) token embedding; after loading
      pretrained weights use `initializers.initialize_prompt`.
    num_prompts: None for one prompt; n for a bank selected per example by
      `prompt_index` `[b]`.
    placement: 'prefix', 'suffix' or 'prefix_after_first' (`combine.py`).
    remove_prompt_from_output: drop the prompt positions from the encoder
      output, so the decoder attends to the input positions only.
  """
  prompt_length: int = 100
  prompt_init: initializers.PromptInitializer = initializers.random_uniform()
  num_prompts: Optional[int] = None
  placement: str = combine.PREFIX
  remove_prompt_from_output: bool = False

  def trainable_patterns(self) -> tuple[str, ...]:
    """The soft prompt (a bank too): `prompt/prompt`."""
    return freezing.PROMPT_PATTERNS

  def setup(self):
    super().setup()
    self.prompt = prompt_lib.Prompt(
        self.prompt_length, self.config.emb_dim, self.prompt_init,
        self.num_prompts, self.config.dtype, name="prompt")

  def embed_inputs(self, encoder_input_tokens: Array,
                   enable_dropout: bool = False,
                   prompt_index: Optional[Array] = None
                   ) -> tuple[Array, Array]:
    """Tokens `[b, l]` -> joined embedding `[b, p + l, e]`, mask `[b, p + l]`.

    `prompt_index` `[b]` (int) picks each example's prompt from a bank.
    """
    embedded, mask = super().embed_inputs(encoder_input_tokens,
                                          enable_dropout)
    prompt = self.prompt(encoder_input_tokens.shape[0], prompt_index,
                         self.token_embedder.embedding)
    return combine.get_combination(self.placement)(prompt, embedded, mask)

  def encode(self, encoder_input_tokens: Array, *,
             enable_dropout: bool = False,
             prompt_index: Optional[Array] = None) -> tuple[Array, Array]:
    """Encoder output and mask: `[b, p + l, e]`, `[b, p + l]`.

    With `remove_prompt_from_output`, `[b, l, e]` and `[b, l]` instead.
    """
    encoded, mask = super().encode(encoder_input_tokens,
                                   enable_dropout=enable_dropout,
                                   prompt_index=prompt_index)
    if self.remove_prompt_from_output:
      encoded, mask = combine.remove_prompt(encoded, mask, self.prompt_length,
                                            self.placement)
    return encoded, mask
