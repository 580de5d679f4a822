"""Gin command-line handling shared by the entry points (T5X idioms).

Entry points and scripts take `--gin_file=FILE` (repeatable), `--gin.NAME=VALUE` or
`--gin_bindings='NAME = VALUE'` (repeatable, e.g.
`--gin.MODEL_DIR="'/tmp/run'"`) and `--gin_search_paths=DIR[,DIR]`. The
installed `configs/` directory is always on the search path, so
`--gin_file=models/t5_1_1_base.gin` works from anywhere. Gin is used here
only; the library itself takes plain arguments.

After parsing, `check_bindings_used` refuses a command-line macro that
nothing reads (a misspelt `--gin.LEARNIG_RATE=...` would otherwise be a
silent no-op) and `check_required_macros` names every `%gin.REQUIRED` macro
left unset.
"""

import contextlib
import difflib
import logging
import os
import pathlib
from typing import Any, Callable, Iterable, Optional, Sequence

from absl import flags
import gin
from gin import config as gin_config

from prompt_tuning import cli
from prompt_tuning import paths
from prompt_tuning import errors
import prompt_tuning.configs

CONFIGS_DIR = pathlib.Path(prompt_tuning.configs.__file__).resolve().parent


class GinConfigError(errors.ConfigError):
  """A gin file or binding could not be parsed or applied."""


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
  """Parses gin files then bindings, with the packaged configs searchable;
  every `%gin.REQUIRED` macro must be set (`check_required_macros`)."""
  # Registers the library functions bound by name (data locations, the
  # vocabulary, mixing); imported here, after the entry point's quiet
  # start-up, because it imports the data pipeline (TensorFlow).
  import prompt_tuning.gin_configurables  # pylint: disable=g-import-not-at-top,unused-import
  for path in [str(CONFIGS_DIR), *search_paths, os.getcwd()]:
    gin.add_config_file_search_path(path)
  for f in files:
    try:
      with _quiet_search_misses():
        gin.parse_config_file(f)
    except IOError as e:
      raise GinConfigError(
          f"Gin file {f!r} not found (searched the working directory, "
          f"{CONFIGS_DIR} and --gin_search_paths): {e}") from e
  for b in bindings:
    try:
      gin.parse_config(b)
    except Exception as e:  # gin raises several parser error types.
      raise GinConfigError(
          f"Malformed or unknown gin binding '{b}': {e}. Bindings look like "
          "NAME = VALUE with Python literals (quote strings) or "
          "@configurable references.") from e
  check_required_macros()
  gin.finalize()


def query_macro(name: str, default=None):
  """The value bound to macro `name`, or `default` if it is unbound."""
  try:
    return gin.query_parameter(f"%{name}")
  except ValueError:
    return default


def binding_name(binding: str) -> str:
  """`'NAME = value'` -> `'NAME'` (a macro, or `scope/fn.param`)."""
  return binding.split("=", 1)[0].strip()


def _macro_values() -> dict[str, object]:
  """Every defined macro and its (unevaluated) value."""
  return {scope: params.get("value")
          for (scope, selector), params in gin_config._CONFIG.items()  # pylint: disable=protected-access
          if selector == "gin.macro"}


def referenced_macros() -> set[str]:
  """Names of the macros some binding refers to as `%NAME`."""
  macro = gin_config.get_configurable(gin_config.macro)
  return {"/".join(ref.scopes) for ref in gin_config.iterate_references(
      gin_config._CONFIG, to=macro)}  # pylint: disable=protected-access


def check_bindings_used(bindings: Iterable[str],
                        read_directly: Iterable[str] = ()) -> None:
  """Raises if a command-line macro binding is read by nothing.

  Args:
    bindings: the command-line bindings (`NAME = VALUE`).
    read_directly: macros the entry point queries itself (not via `%NAME`).

  Raises:
    GinConfigError: naming the unused macros and the closest used ones.
  """
  used = referenced_macros() | set(read_directly)
  problems = []
  for binding in bindings:
    name = binding_name(binding)
    if "." in name or "/" in name or name in used:
      continue
    close = difflib.get_close_matches(name, sorted(used), n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(close)}?" if close else
            "the macros these gin files read are " + ", ".join(sorted(used)))
    problems.append(f"{name} ({hint})")
  if problems:
    raise GinConfigError(
        "Command-line binding of a macro no gin file uses, so it would "
        "change nothing: " + "; ".join(problems) + ".")


def check_required_macros() -> None:
  """Raises naming every macro still bound to `%gin.REQUIRED`."""
  missing = sorted(
      name for name, value in _macro_values().items()
      if isinstance(value, gin_config.ConfigurableReference) and
      value.scoped_selector.startswith("gin.REQUIRED"))
  if missing:
    raise GinConfigError(
        "Required setting(s) not given: " + ", ".join(missing) + ". Add "
        + " ".join(f"--gin.{m}=..." for m in missing) +
        " (strings in quotes, e.g. --gin.MODEL_DIR=\"'/tmp/run'\").")


def parse_gin_command(argv: Sequence[str], doc: str,
                      flag_values: Optional[flags.FlagValues] = None,
                      read_directly: Sequence[str] = (),
                      before_gin: Optional[
                          Callable[[flags.FlagValues], Any]] = None,
                      gin_required: bool = True) -> flags.FlagValues:
  """Flags, quiet start-up, then the gin files and bindings, checked.

  Args:
    argv: the command line without the program name.
    doc: the command's help text.
    flag_values: the command's flags (default: `cli.new_flags()`).
    read_directly: macros the command queries itself (not via `%NAME`).
    before_gin: called with the parsed flags after the quiet start-up and
      before the gin files are read (e.g. `cli.initialize_distributed`).
    gin_required: False for a tool whose gin files are optional (no gin
      is parsed when none is given).

  Returns:
    The parsed flags; gin is parsed and finalized.

  Raises:
    cli.UsageError / GinConfigError: for a bad command line, a gin file not
      found, a malformed binding, an unset required macro or a command-line
      macro nothing reads.
  """
  args = cli.parse_flags(argv, flag_values or cli.new_flags(), doc)
  if gin_required and not args.gin_file:
    raise cli.UsageError("Give at least one --gin_file, e.g. "
                         "--gin_file=models/t5_1_1_base.gin; see --help.")
  cli.quiet_startup(cli.is_verbose(args))
  cli.show_project_logs()
  if before_gin is not None:
    before_gin(args)
  if args.gin_file or args.gin_bindings:
    parse_gin(args.gin_file, args.gin_bindings,
              cli.search_paths(args.gin_search_paths))
    check_bindings_used(args.gin_bindings, read_directly)
    paths.expand_gin_paths()  # `~` and `$VARS` in path settings.
  return args


def configured_model() -> Any:
  """The `EncoderDecoderModel` the parsed gin files bind to `MODEL` (the one
  `%MODEL` names in the run configs).

  Raises:
    GinConfigError: if no gin file binds MODEL (no model file given).
  """
  model = query_macro("MODEL")
  if model is None:
    raise GinConfigError(
        "No model configured: pass a model gin file first, e.g. "
        "--gin_file=models/t5_1_1_base.gin --gin_file=prompts/prompt.gin.")
  return model.scoped_configurable_fn()
