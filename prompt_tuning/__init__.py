"""prompt-tuning: parameter-efficient prompt tuning of T5 in JAX/Flax, T5X style."""

__version__ = "0.1.0"
