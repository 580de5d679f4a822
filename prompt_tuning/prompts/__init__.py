"""Soft prompts for T5: the prompt module, placements, initialisers, freezing.

  prompt.py        `Prompt`, one `[p, e]` prompt or a `[n, p, e]` bank
  combine.py       prefix / suffix / prefix-after-first joins, `remove_prompt`
  initializers.py  random uniform, sampled vocabulary, class labels, string,
                   file; `initialize_prompt` for pretrained parameters
  models.py        `PromptTransformer`, a `Transformer` with a prompt
  freezing.py      trainable/frozen split and a prompt-only train step
"""

from prompt_tuning.prompts.models import PromptTransformer
from prompt_tuning.prompts.prompt import Prompt
