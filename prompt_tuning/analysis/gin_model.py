"""The gin-configured MODEL, for command-line tools that take gin files.

  model = model_from_gin(['models/t5_1_1_base.gin', 'prompts/prompt.gin'],
                         ['PROMPT_LENGTH = 100'])

returns the `EncoderDecoderModel` those files bind, the same one `%MODEL`
names in the run configs.
"""

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
