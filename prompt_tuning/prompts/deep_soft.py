"""A soft prompt on the input and a deep prompt in every layer, together.

`DeepSoftPromptTransformer` joins `PromptTransformer`'s input prompt
(`prompt/prompt`, `[p_in, e]`) to the embedded tokens and gives every
self-attention layer `DeepPromptTransformer`'s key/value prefixes
(`deep_prompt/...`), optionally with the classification head
(`classifier/...`). Both prompts are trainable together, e.g. with
the model's declared `trainable_patterns()`: `prompt/prompt`, `deep_prompt/.*`
(and `classifier/.*` with a head).

The encoder output (and so the head's mean pooling and the decoder's
cross-attention) covers the input prompt's positions, as in
`PromptTransformer`, unless `remove_prompt_from_output` drops them. The
prefixes add no positions.
"""

from prompt_tuning.prompts import deep
from prompt_tuning.prompts import models as prompt_models


class DeepSoftPromptTransformer(deep.DeepPromptTransformer,
                                prompt_models.PromptTransformer):
  """T5 with an input soft prompt plus per-layer deep prompts.

  Attributes: those of `deep.DeepPromptTransformer` (`prefix_length`, ...,
  `num_classes`, `prompt_source`) and of `prompt_models.PromptTransformer`
  (`prompt_length`, `prompt_init`, `num_prompts`, `placement`,
  `remove_prompt_from_output`). The input step comes from the latter
  (`embed_inputs`, `encode`'s prompt removal), the per-layer prefixes and
  `classify` from the former.
  """

  def trainable_patterns(self) -> tuple[str, ...]:
    """Both prompts, and the head when there is one."""
    return (prompt_models.PromptTransformer.trainable_patterns(self) +
            deep.DeepPromptTransformer.trainable_patterns(self))
