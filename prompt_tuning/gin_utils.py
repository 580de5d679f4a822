"""Gin command-line handling shared by the entry points (T5X idioms).

Entry points take `--gin_file=FILE` (repeatable), `--gin.NAME=VALUE`
(repeatable, e.g. `--gin.MODEL_DIR="'/tmp/run'"`) and
`--gin_search_path=DIR`. The installed `configs/` directory is always on the
search path, so `--gin_file=models/t5_1_1_base.gin` works from anywhere.
Gin is used here only; the library itself takes plain arguments.
"""

import contextlib
import logging
import os
import pathlib
from typing import Sequence

import gin

import prompt_tuning.configs

CONFIGS_DIR = pathlib.Path(prompt_tuning.configs.__file__).resolve().parent


class GinConfigError(ValueError):
  """A gin file or binding could not be parsed or applied."""


def split_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str],
                                                 list[str], list[str]]:
  """Separates gin flags from the rest.

  Returns:
    (gin files, gin bindings, extra search paths, remaining args).
  """
  files, bindings, search, rest = [], [], [], []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    value = None
    for flag, dest in (("--gin_file", files), ("--gin_search_path", search)):
      if arg == flag or arg.startswith(flag + "="):
        if "=" in arg:
          value = arg.split("=", 1)[1]
        elif i + 1 < len(args):
          i += 1
          value = args[i]
        else:
          raise GinConfigError(f"{flag} needs a value, e.g. {flag}=FILE.")
        dest.append(value)
        break
    else:
      if arg.startswith("--gin."):
        binding = arg[len("--gin."):]
        if "=" not in binding:
          raise GinConfigError(
              f"Malformed gin flag {arg!r}: write --gin.NAME=VALUE, e.g. "
              "--gin.TRAIN_STEPS=1000 or --gin.MODEL_DIR=\"'/tmp/run'\" "
              "(strings need quotes).")
        name, val = binding.split("=", 1)
        bindings.append(f"{name} = {val}")
      else:
        rest.append(arg)
    i += 1
  return files, bindings, search, rest


class _DropPathNotFound(logging.Filter):
  """Gin's package-resource reader logs an error for every search-path miss."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Path not found")


@contextlib.contextmanager
def _quiet_search_misses():
  root = logging.getLogger()
  quiet = _DropPathNotFound()
  root.addFilter(quiet)
  try:
    yield
  finally:
    root.removeFilter(quiet)


def parse_gin(files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> None:
  """Parses gin files then bindings, with the packaged configs searchable."""
  for path in [str(CONFIGS_DIR), *search_paths, os.getcwd()]:
    gin.add_config_file_search_path(path)
  for f in files:
    try:
      with _quiet_search_misses():
        gin.parse_config_file(f)
    except IOError as e:
      raise GinConfigError(
          f"Gin file {f!r} not found (searched the working directory, "
          f"{CONFIGS_DIR} and --gin_search_path): {e}") from e
  for b in bindings:
    try:
      gin.parse_config(b)
    except Exception as e:  # gin raises several parser error types.
      raise GinConfigError(
          f"Malformed or unknown gin binding '{b}': {e}. Bindings look like "
          "NAME = VALUE with Python literals (quote strings) or "
          "@configurable references.") from e
  gin.finalize()


def query_macro(name: str, default=None):
  """The value bound to macro `name`, or `default` if it is unbound."""
  try:
    return gin.query_parameter(f"%{name}")
  except ValueError:
    return default
