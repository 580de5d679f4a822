"""The library functions gin binds by their library name, registered once.

The library imports no gin. Gin files reach most of it by dynamic
registration (`from __gin__ import dynamic_registration` and an `import` line
per module, see `configs/`). The functions below are different: the library
calls them itself, deep inside the data pipeline, where no gin file can pass
an argument, and users bind them by their full name, e.g.

    prompt_tuning.data.locations.super_glue_dir.path = "/data/super_glue"
    prompt_tuning.data.vocab.vocabulary_path.path = "/ckpts/t5_base"
    prompt_tuning.data.mixing.capped_examples_rate.cap = 65536

Importing this module registers each of them under its module's name and
installs gin's bindings as its `prompt_tuning.bindings` source, so the
library sees them at every call (bindings made later still apply). Every
entry point that parses gin imports it first (through
`prompt_tuning.gin_utils`); gin refuses registrations once it is locked.
"""

import functools
from typing import Any, Callable

import gin

from prompt_tuning import bindings
from prompt_tuning.data import locations
from prompt_tuning.data import mixing
from prompt_tuning.data import vocab
from prompt_tuning.models import config as model_config
from prompt_tuning.training import length_buckets
from prompt_tuning.training import run_settings

# Code defaults that gin files give their user macros, e.g.
# `LENGTH_BUCKETS = %prompt_tuning.DEFAULT_LENGTH_BUCKETS`: the value is
# written once, here in the library.
CONSTANTS: dict[str, Any] = {
    "prompt_tuning.DEFAULT_ATTENTION_LAYOUT":
        model_config.DEFAULT_ATTENTION_LAYOUT,
    "prompt_tuning.DEFAULT_LENGTH_BUCKETS": length_buckets.DEFAULT_SPEC,
    "prompt_tuning.DEFAULT_FROZEN_DTYPE": run_settings.DEFAULT_FROZEN_DTYPE,
    "prompt_tuning.DEFAULT_EARLY_STOPPING_PATIENCE":
        run_settings.DEFAULT_EARLY_STOPPING_PATIENCE,
    "prompt_tuning.DEFAULT_EARLY_STOPPING_MIN_DELTA":
        run_settings.DEFAULT_EARLY_STOPPING_MIN_DELTA,
}

# Bound by name in gin files and `--gin.` flags (see the module docstring).
BOUND_BY_NAME: tuple[Callable[..., Any], ...] = (
    locations.super_glue_dir,
    locations.glue_dir,
    locations.tfds_data_dir,
    vocab.vocabulary_path,
    mixing.capped_examples_rate,
)


def _register(fn: Callable[..., Any]) -> None:
  """Registers `fn` as `<its module>.<its name>` and routes its bindings."""
  gin.external_configurable(fn, module=fn.__module__)
  bindings.install(fn, functools.partial(gin.get_bindings, fn))


for _fn in BOUND_BY_NAME:
  _register(_fn)
for _name, _value in CONSTANTS.items():
  gin.constant(_name, _value)
