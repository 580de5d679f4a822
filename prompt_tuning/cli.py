"""Command lines of the entry points, T5X style: absl flags plus gin.

Every entry point (`python -m prompt_tuning.train`, `evaluate`, `infer`,
`predict`) takes

  --gin_file=FILE            repeatable; searched in the working directory,
                             the installed configs/ and --gin_search_paths;
  --gin_bindings='NAME = V'  repeatable, applied after the files;
  --gin.NAME=VALUE           shorthand for --gin_bindings='NAME = VALUE';
  --gin_search_paths=A,B     repeatable, comma-separated directories;
  --validate_only            check settings, task, data, vocabulary and
                             checkpoint paths, then stop: nothing is loaded
                             or written;
  --verbose                  keep TensorFlow's start-up logs and print the
                             traceback of every error;
  --nocompilation_cache      compile from scratch: by default compiled
                             programs are kept on disk between runs
                             (`enable_compilation_cache`);
  --help                     this text.

`python -m prompt_tuning.train` also takes the multi-process flags
(`define_distributed_flags`): `--coordinator_address=host:port
--num_processes=N --process_id=I` on each process, or `--multihost` to
detect them (TPU pods, SLURM, Open MPI), `--local_device_ids=0,1`; JAX joins
the run (`training.distributed.initialize`) before the gin files are read.

Errors end the run with one last line `error: ...` and a non-zero exit
code: 2 for a bad command line or setting (no traceback), 1 for anything
else (traceback first, unless it is a known bad-input error).

Only absl is imported here: the heavy libraries (TensorFlow, JAX) are
imported after the flags are read, so that their start-up logs can be
silenced first.
"""

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import traceback
from typing import Callable, Iterator, NoReturn, Optional, Sequence

from absl import flags

from prompt_tuning import errors
from prompt_tuning import paper_defaults
from prompt_tuning import paths

VERBOSE_ENV = "PROMPT_TUNING_VERBOSE"
# Where compiled programs are kept between runs, or `0` (`off`, `false`,
# `no`) for nowhere; unset: JAX's own variable, else the default directory.
COMPILATION_CACHE_ENV = "PROMPT_TUNING_COMPILATION_CACHE"
JAX_COMPILATION_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
DEFAULT_COMPILATION_CACHE_DIR = "~/.cache/prompt_tuning/jax_cache"
_OFF = ("0", "off", "false", "no")
# Flags of the entry points and scripts that name files or folders: `~` and
# `$VARS` in them are expanded (`paths.expand`) when the flags are read.
PATH_FLAGS = frozenset({
    "gin_file", "gin_search_paths", "cache_dir", "shared_dir", "work_dir",
    "model_dir", "output", "output_dir", "out_dir", "checkpoint", "vocab",
    "prompt", "prompts", "embedding", "json", "markdown",
})


class UsageError(errors.ConfigError):
  """The command line itself is malformed (unknown flag, missing value)."""


def define_gin_flags(flag_values: flags.FlagValues) -> None:
  """Defines the gin flags every entry point shares on `flag_values`."""
  flags.DEFINE_multi_string(
      "gin_file", [], "Gin file to parse (repeatable), e.g. "
      "models/t5_1_1_base.gin.", flag_values=flag_values)
  flags.DEFINE_multi_string(
      "gin_bindings", [], "Gin binding applied after the files (repeatable), "
      "e.g. --gin_bindings=\"TRAIN_STEPS = 1000\". --gin.NAME=VALUE is the "
      "same.", flag_values=flag_values)
  flags.DEFINE_multi_string(
      "gin_search_paths", [], "Comma-separated directories searched for gin "
      "files and includes (repeatable); the installed configs/ and the "
      "working directory always are.", flag_values=flag_values)
  flags.DEFINE_bool(
      "validate_only", False, "Check the configuration, data, vocabulary and "
      "checkpoint paths, print the checks and stop without loading weights "
      "or writing anything.", flag_values=flag_values)
  define_verbose_flag(flag_values)
  define_compilation_cache_flag(flag_values)


def define_verbose_flag(flag_values: flags.FlagValues) -> None:
  """Defines --verbose (`is_verbose`), which every command has."""
  flags.DEFINE_bool(
      "verbose", False, "Show TensorFlow's start-up logs and full tracebacks "
      f"(also: {VERBOSE_ENV}=1).", flag_values=flag_values)


def define_compilation_cache_flag(flag_values: flags.FlagValues) -> None:
  """Defines --[no]compilation_cache (`enable_compilation_cache`)."""
  flags.DEFINE_bool(
      "compilation_cache", True, "Keep compiled programs on disk between runs "
      f"(in ${COMPILATION_CACHE_ENV}, else ${JAX_COMPILATION_CACHE_ENV}, else "
      f"{DEFAULT_COMPILATION_CACHE_DIR}); --nocompilation_cache or "
      f"{COMPILATION_CACHE_ENV}=0 turns it off.", flag_values=flag_values)


def compilation_cache_dir(enabled: bool = True) -> Optional[str]:
  """Where the entry points keep compiled programs; None when off.

  `$PROMPT_TUNING_COMPILATION_CACHE` (`0`, `off`, `false`, `no`: off), else
  JAX's own `$JAX_COMPILATION_CACHE_DIR`, else
  `~/.cache/prompt_tuning/jax_cache`; None when `enabled` is False
  (`--nocompilation_cache`). Reads no JAX.
  """
  setting = os.environ.get(COMPILATION_CACHE_ENV, "").strip()
  if not enabled or setting.lower() in _OFF:
    return None
  path = (setting or os.environ.get(JAX_COMPILATION_CACHE_ENV) or
          DEFAULT_COMPILATION_CACHE_DIR)
  return os.path.abspath(os.path.expanduser(path))


def enable_compilation_cache(enabled: bool = True) -> Optional[str]:
  """Turns on JAX's persistent compilation cache in `compilation_cache_dir`.

  Every compilation is kept, however quick or small (JAX's defaults keep
  only those over a second), so a repeated command loads its programs
  instead of compiling them. When off, JAX's settings are left as they are
  (its own `JAX_*` variables still apply). Call it before the first
  compilation: JAX opens its cache once per process.

  Args:
    enabled: False for `--nocompilation_cache`.

  Returns:
    The cache directory, or None when off.
  """
  path = compilation_cache_dir(enabled)
  if path is None:
    return None
  # pylint: disable-next=g-import-not-at-top  (JAX after the flags are read)
  import jax
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path


def define_batch_flags(flag_values: flags.FlagValues) -> None:
  """Defines --batch_size, --inputs_length and --targets_length, the paper's
  values by default."""
  flags.DEFINE_integer("batch_size", paper_defaults.BATCH_SIZE,
                       "Global batch (split over the data axis).",
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer("inputs_length", paper_defaults.INPUTS_LENGTH,
                       "Encoder tokens, without the prompt.", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer("targets_length", paper_defaults.TARGETS_LENGTH,
                       "Decoder tokens.", lower_bound=1,
                       flag_values=flag_values)


def define_decoding_flags(flag_values: flags.FlagValues) -> None:
  """Defines the flags of the tools that decode a task split with a frozen
  model (scripts/ensemble_prompts.py, serve_mixture.py)."""
  flags.DEFINE_string("checkpoint", None, "The frozen pretrained model (T5X "
                      "or Hugging Face directory).", flag_values=flag_values)
  flags.mark_flag_as_required("checkpoint", flag_values=flag_values)
  flags.DEFINE_string("split", "validation", "Split to decode.",
                      flag_values=flag_values)
  define_batch_flags(flag_values)
  flags.DEFINE_integer("num_examples", None, "Decode the first N examples "
                       "only (default all).", lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer("num_partitions", 1, "Size of the mesh's model axis.",
                       lower_bound=1, flag_values=flag_values)


def define_distributed_flags(flag_values: flags.FlagValues) -> None:
  """Defines the multi-process flags (`training.distributed.initialize`)."""
  flags.DEFINE_bool(
      "multihost", False, "Join a multi-process run, detecting the settings "
      "not given (TPU pods, SLURM, Open MPI).", flag_values=flag_values)
  flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0, the same on "
      "every process of a multi-process run.", flag_values=flag_values)
  flags.DEFINE_integer(
      "num_processes", None, "Processes in a multi-process run.",
      flag_values=flag_values)
  flags.DEFINE_integer(
      "process_id", None, "This process's index, 0 ... num_processes - 1.",
      flag_values=flag_values)
  flags.DEFINE_list(
      "local_device_ids", None, "Comma-separated local device ids this "
      "process uses (default all).", flag_values=flag_values)


def initialize_distributed(flag_values: flags.FlagValues) -> bool:
  """Joins the multi-process run the flags describe; False for a single
  process (no multi-process flag given)."""
  # pylint: disable-next=g-import-not-at-top  (JAX after the quiet start-up)
  from prompt_tuning.training import distributed
  ids = flag_values["local_device_ids"].value
  try:
    ids = None if ids is None else [int(i) for i in ids]
  except ValueError as e:
    raise UsageError(f"--local_device_ids must be integers: {ids}.") from e
  return distributed.initialize(
      coordinator_address=flag_values["coordinator_address"].value,
      num_processes=flag_values["num_processes"].value,
      process_id=flag_values["process_id"].value, local_device_ids=ids,
      auto=flag_values["multihost"].value)


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE`; others unchanged."""
  out = []
  for arg in argv:
    if arg.startswith("--gin."):
      binding = arg[len("--gin."):]
      if "=" not in binding:
        raise UsageError(
            f"Malformed gin flag {arg!r}: write --gin.NAME=VALUE, e.g. "
            "--gin.TRAIN_STEPS=1000 or --gin.MODEL_DIR=\"'/tmp/run'\" "
            "(strings need quotes).")
      name, value = binding.split("=", 1)
      out.append(f"--gin_bindings={name} = {value}")
    else:
      out.append(arg)
  return out


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues,
                doc: str) -> flags.FlagValues:
  """Parses `argv` (without the program name) into `flag_values`.

  `--help` (or `-h`, `--helpfull`) prints `doc` and the flags, then exits 0.
  Where the flags have `--compilation_cache`, JAX's persistent compilation
  cache is then turned on (`enable_compilation_cache`), unless
  `--nocompilation_cache` or `--validate_only` is given.

  Raises:
    UsageError: for an unknown flag, a bad value or positional arguments.
  """
  if any(a in ("--help", "-h", "--helpfull", "-?") for a in argv):
    print(doc.strip() + "\n\nFlags:\n" + flag_values.get_help())
    sys.exit(0)
  try:
    rest = flag_values(["prog", *rewrite_gin_args(argv)])
  except flags.Error as e:
    raise UsageError(f"{str(e).rstrip('. ')}; see --help for the flags.") from e
  if rest[1:]:
    raise UsageError(f"Unexpected arguments {rest[1:]}; flags look like "
                     "--gin_file=FILE or --gin.NAME=VALUE. See --help.")
  expand_path_flags(flag_values)
  if "verbose" in flag_values and flag_values["verbose"].value:
    os.environ[VERBOSE_ENV] = "1"
  if "compilation_cache" in flag_values:
    validating = ("validate_only" in flag_values and
                  flag_values["validate_only"].value)
    enable_compilation_cache(flag_values["compilation_cache"].value and
                             not validating)
  return flag_values


def expand_path_flags(flag_values: flags.FlagValues) -> None:
  """Expands `~` and `$VARS` in the parsed `PATH_FLAGS` (each value of a
  list flag).

  Raises:
    paths.UnsetVariableError: naming the flag and the unset variable.
  """
  for name in sorted(PATH_FLAGS & set(flag_values)):
    flag = flag_values[name]
    if isinstance(flag.value, str):
      flag.value = paths.expand(flag.value, f"--{name}")
    elif isinstance(flag.value, list):
      flag.value = [paths.expand(v, f"--{name}") if isinstance(v, str) else v
                    for v in flag.value]


def search_paths(values: Sequence[str]) -> list[str]:
  """Splits repeated, comma-separated --gin_search_paths values."""
  return [p for v in values for p in v.split(",") if p]


def is_verbose(flag_values: Optional[flags.FlagValues] = None) -> bool:
  """`--verbose` (parsed, or on the command line before parsing) or
  `PROMPT_TUNING_VERBOSE=1`."""
  if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
    return True
  if flag_values is None:
    return "--verbose" in sys.argv[1:]
  return bool(flag_values["verbose"].value)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
  """Sends file descriptor 2 to /dev/null: C++ libraries log there directly,
  before any logging setting can apply. Python exceptions still propagate."""
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def quiet_startup(verbose: bool = False) -> None:
  """Imports the data pipeline's TensorFlow (GPUs hidden from it) without its
  C++ start-up logs (CUDA probing on CPU machines, CPU feature notes)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
  if verbose:
    import prompt_tuning.data  # pylint: disable=g-import-not-at-top,unused-import
    return
  with _native_stderr_silenced():
    import prompt_tuning.data  # pylint: disable=g-import-not-at-top,unused-import


class _Format(logging.Formatter):
  """Plain messages; warnings and errors say so."""

  def format(self, record: logging.LogRecord) -> str:
    message = record.getMessage()
    if record.levelno >= logging.WARNING:
      return f"{record.levelname.lower()}: {message}"
    return message


class _StderrHandler(logging.Handler):
  """Writes each record to whatever `sys.stderr` is when it is emitted.

  (A `StreamHandler` keeps the stream it was made with, so a later swap of
  `sys.stderr`, e.g. by a caller capturing output, would not see the logs.)
  """

  def emit(self, record: logging.LogRecord) -> None:
    try:
      sys.stderr.write(self.format(record) + "\n")
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def show_project_logs(level: int = logging.INFO) -> None:
  """Sends this package's logs of `level` and higher to stderr, one line
  each."""
  logger = logging.getLogger("prompt_tuning")
  if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
    handler = _StderrHandler()
    handler.setFormatter(_Format())
    logger.addHandler(handler)
  logger.setLevel(level)
  logger.propagate = False


def _bad_input_errors() -> tuple[type[BaseException], ...]:
  return (errors.ConfigError, FileNotFoundError)


def _message(error: BaseException) -> str:
  """The error's message without the lines gin appends to it ("In call to
  configurable ...", "In file ..."), which say where, not what."""
  lines = [line for line in str(error).splitlines()
           if not line.strip().startswith(("In call to configurable",
                                            "In file "))]
  return " ".join(line.strip() for line in lines)


# The process's own temporary folder (`use_private_temp_dir`) and the one
# `tempfile` used before it.
_private_temp: list[tuple[str, Optional[str]]] = []


def use_private_temp_dir() -> str:
  """Points `tempfile` at a folder of this process's own (`prompt_tuning-*`
  in the usual temporary folder), removed when the process ends
  (`remove_private_temp_dir`, called by `run` and at exit).

  TensorFlow's autograph writes a module file for each function a data
  pipeline traces (`__autograph_generated_file*.py`) and removes them only
  at interpreter exit, which the commands skip (`_finish`): without this
  every run would leave some 30 files behind. Idempotent.
  """
  if not _private_temp:
    previous = tempfile.tempdir
    path = tempfile.mkdtemp(prefix="prompt_tuning-")
    _private_temp.append((path, previous))
    tempfile.tempdir = path
    atexit.register(remove_private_temp_dir)
  return _private_temp[0][0]


def remove_private_temp_dir() -> None:
  """Removes the folder of `use_private_temp_dir`, if any, and points
  `tempfile` back where it was."""
  while _private_temp:
    path, previous = _private_temp.pop()
    if tempfile.tempdir == path:
      tempfile.tempdir = previous
    shutil.rmtree(path, ignore_errors=True)


def _finish(code: int) -> NoReturn:
  """Exits without interpreter teardown, so the last line printed stays
  ours (background threads of checkpoint and metric libraries may otherwise
  log at exit); the private temporary folder is removed first."""
  remove_private_temp_dir()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def run(main: Callable[[Sequence[str]], int],
        argv: Optional[Sequence[str]] = None) -> NoReturn:
  """Runs `main(argv)` as a command: exit code, and the error as last line.
  Temporary files go to a folder of the process's own, removed at the end
  (`use_private_temp_dir`)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    use_private_temp_dir()
    code = main(argv)
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if not isinstance(e.code, (int, type(None))):
      print(e.code, file=sys.stderr)
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    code = 130
  except BaseException as e:  # pylint: disable=broad-except
    known = isinstance(e, _bad_input_errors())
    if is_verbose() or not known:
      traceback.print_exc()
    name = "" if known else f"{type(e).__name__}: "
    print(f"error: {name}{_message(e)}", file=sys.stderr)
    code = 2 if isinstance(e, errors.ConfigError) else 1
  _finish(code or 0)


def new_flags() -> flags.FlagValues:
  """A flag set with the shared gin flags (one per command, so that tests
  can run several commands in one process)."""
  flag_values = flags.FlagValues()
  define_gin_flags(flag_values)
  return flag_values
