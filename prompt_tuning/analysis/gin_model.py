"""The gin-configured MODEL, for command-line tools that take gin files.

  model = model_from_gin(['models/t5_1_1_base.gin', 'prompts/prompt.gin'],
                         ['PROMPT_LENGTH = 100'])

returns the `EncoderDecoderModel` those files bind, the same one `%MODEL`
names in the run configs.
"""

import argparse
from typing import Sequence

import gin

# Task modules declare gin configurables; import them before gin locks.
import prompt_tuning.tasks  # pylint: disable=unused-import
from prompt_tuning import gin_utils
from prompt_tuning.models import model as models


def model_from_gin(files: Sequence[str], bindings: Sequence[str] = (),
                   search_paths: Sequence[str] = ()
                   ) -> models.EncoderDecoderModel:
  """Parses gin files and bindings, then builds the configured model."""
  if not files:
    raise ValueError("Give the model's gin files, e.g. "
                     "--gin_file=models/t5_1_1_base.gin "
                     "--gin_file=prompts/prompt.gin.")
  gin_utils.parse_gin(files, bindings, search_paths)
  return gin.get_configurable(models.EncoderDecoderModel)()


def add_decoding_flags(parser: argparse.ArgumentParser) -> None:
  """The flags shared by tools that decode a task split with a frozen model:
  --checkpoint, --split, --batch_size, --inputs_length, --targets_length,
  --num_examples, --num_partitions."""
  parser.add_argument("--checkpoint", required=True,
                      help="the frozen pretrained model (T5X or HF)")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--inputs_length", type=int, default=512)
  parser.add_argument("--targets_length", type=int, default=8)
  parser.add_argument("--num_examples", type=int, default=None)
  parser.add_argument("--num_partitions", type=int, default=1)
