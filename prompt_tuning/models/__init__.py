"""T5 models: configuration, Flax modules, decoding and the model wrapper."""

from prompt_tuning.models.config import GATED_GELU, RELU, T5Config
from prompt_tuning.models.t5 import Transformer
