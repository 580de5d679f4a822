"""The paper's prompt-tuning settings (Lester et al. 2021, Section 3), the
defaults of the code and the flags.

The run gin files (`configs/runs/prompt_finetune.gin`, `prompt_eval.gin`,
`prompt_infer.gin`, `configs/prompts/prompt.gin`) show the same values as
their macros' defaults, for a reader of the configuration;
`tests/test_paper_defaults.py` holds them equal to these.
"""

# Soft-prompt positions.
PROMPT_LENGTH = 100
# Adafactor's constant learning rate (the other Adafactor settings are
# `training.optimizers.adafactor`'s defaults).
LEARNING_RATE = 0.3
TRAIN_STEPS = 30_000
BATCH_SIZE = 32
# SuperGLUE inputs fit 512 tokens; labels fit 8.
INPUTS_LENGTH = 512
TARGETS_LENGTH = 8
DROPOUT_RATE = 0.1


def feature_lengths() -> dict[str, int]:
  """`{'inputs': 512, 'targets': 8}`, a fresh dict."""
  return {"inputs": INPUTS_LENGTH, "targets": TARGETS_LENGTH}
