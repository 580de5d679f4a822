"""Pytest's set-up for every test: the environment (before any jax import)
and the fixtures. Plain helpers and constants are in `helpers.py`.
"""

import os

# Eight virtual CPU devices for the partitioning tests; must precede any jax
# import (pytest imports this file before any test module, and so before
# `helpers`). Single-device code simply runs on the first one.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # Tests are CPU-only.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from prompt_tuning import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  (imports no JAX)

# The entry points' persistent compilation cache stays off: tests that run
# them write nothing into the home directory. Tests of the cache, and
# subprocesses given JAX's own JAX_* cache variables, choose a directory.
os.environ[cli.COMPILATION_CACHE_ENV] = "0"

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from helpers import shared_dir, shared_path  # pylint: disable=g-import-not-at-top,wrong-import-position
from prompt_tuning.data import locations  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture
def shared():
  return shared_dir()


@pytest.fixture
def local_super_glue(monkeypatch) -> dict[str, str]:
  """Points the SuperGLUE tasks and the T5 vocabulary at ../shared."""
  env = {
      "PROMPT_TUNING_SUPER_GLUE_DIR": str(shared_path("data", "super_glue")),
      "PROMPT_TUNING_VOCAB": str(shared_path(*locations.VOCAB_IN_SHARED)),
  }
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  return env
