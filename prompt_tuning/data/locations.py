"""Where the data lives: settings resolved at read time, never at import.

Each setting is a plain function. Its value is, in order: an explicit
argument, then the value a configuration layer binds for it
(`prompt_tuning.bindings`; gin files bind
`prompt_tuning.data.locations.super_glue_dir.path`, see
`prompt_tuning.gin_configurables`), then an environment variable, then the
default. Tasks are registered at import time but only call these functions
when they read data, so setting the variable or the binding after
`import prompt_tuning.tasks` still takes effect.

Gin example:

    prompt_tuning.data.locations.super_glue_dir.path = "/data/super_glue"

Shell example:

    export PROMPT_TUNING_SUPER_GLUE_DIR=/data/super_glue
"""

import dataclasses
import os
import pathlib
from typing import Callable, Mapping, Optional, Union

from prompt_tuning import bindings

SUPER_GLUE_DIR_ENV = "PROMPT_TUNING_SUPER_GLUE_DIR"
GLUE_DIR_ENV = "PROMPT_TUNING_GLUE_DIR"
TFDS_DATA_DIR_ENV = "PROMPT_TUNING_TFDS_DATA_DIR"
SHARED_DIR_ENV = "PROMPT_TUNING_SHARED"

# The project's `shared/` folder (real data, the T5 vocabulary, the frozen
# model, fixtures) sits beside the repository root unless SHARED_DIR_ENV says
# otherwise; inside it, the T5 vocabulary is at VOCAB_IN_SHARED.
DEFAULT_SHARED_DIR = pathlib.Path(__file__).resolve().parents[2].parent / (
    "shared")
VOCAB_IN_SHARED = ("models", "t5_vocab", "spiece.model")


def shared_dir(path: Optional[str] = None) -> pathlib.Path:
  """The `shared/` folder: `path`, else $PROMPT_TUNING_SHARED, else the
  default beside the repository root.

  Raises:
    FileNotFoundError: naming the folder and how to point elsewhere.
  """
  found = pathlib.Path(path or os.environ.get(SHARED_DIR_ENV) or
                       DEFAULT_SHARED_DIR).expanduser().resolve()
  if not found.is_dir():
    raise FileNotFoundError(
        f"The project's shared/ folder is not at {found}. Put it beside the "
        f"repository root, set {SHARED_DIR_ENV}=DIR or pass its path.")
  return found


def shared_path(*parts: str, root: Optional[str] = None) -> pathlib.Path:
  """`shared_dir(root)/parts...`, which must exist.

  Raises:
    FileNotFoundError: naming the missing file.
  """
  path = shared_dir(root).joinpath(*parts)
  if not path.exists():
    raise FileNotFoundError(
        f"{path} does not exist in the project's shared/ folder; set "
        f"{SHARED_DIR_ENV}=DIR if yours is elsewhere.")
  return path


@dataclasses.dataclass(frozen=True)
class Setting:
  """How a user sets one location: an environment variable or gin binding.

  Attributes:
    env_var: e.g. `PROMPT_TUNING_SUPER_GLUE_DIR`.
    gin_binding: e.g. `prompt_tuning.data.locations.super_glue_dir.path`.
  """
  env_var: str
  gin_binding: str

  def hint(self) -> str:
    """`ENV_VAR (or the gin binding ...)`, for error messages."""
    return f"{self.env_var} (or the gin binding {self.gin_binding})"


def _binding(function_name: str) -> str:
  """The gin binding of a location function's `path` (see `bindings`)."""
  return f"{__name__}.{function_name}.path"


# The setting behind each location function, by the function's name.
SETTINGS: Mapping[str, Setting] = {
    "super_glue_dir": Setting(SUPER_GLUE_DIR_ENV, _binding("super_glue_dir")),
    "glue_dir": Setting(GLUE_DIR_ENV, _binding("glue_dir")),
    "tfds_data_dir": Setting(TFDS_DATA_DIR_ENV, _binding("tfds_data_dir")),
}


def setting_of(location: Union[str, Callable[..., Optional[str]]]
               ) -> Optional[Setting]:
  """The `Setting` of a location function (or its name), None if unknown."""
  name = location if isinstance(location, str) else getattr(
      location, "__name__", "")
  return SETTINGS.get(name)


def _setting(location: Callable[..., Optional[str]],
             explicit: Optional[str], env_var: str) -> Optional[str]:
  """The explicit value, else the bound `path` of `location`, else the
  non-empty env var, else None."""
  value = explicit or bindings.bound(location).get("path")
  if value:
    return os.fspath(value)
  return os.environ.get(env_var) or None


def super_glue_dir(path: Optional[str] = None) -> Optional[str]:
  """Local SuperGLUE directory in the official release layout, or None.

  The layout is the one of the official zip files unpacked side by side:
  `BoolQ/{train,val,test}.jsonl`, `CB/...`, `COPA/...`, `MultiRC/...`,
  `ReCoRD/...`, `RTE/...`, `WiC/...`, `WSC/...`, `AX-b/AX-b.jsonl` and
  `AX-g/AX-g.jsonl`. None means: read TFDS `super_glue`.

  Args:
    path: the directory; None: the bound one, else the
      `PROMPT_TUNING_SUPER_GLUE_DIR` environment variable.

  Returns:
    The directory, or None to use TFDS.
  """
  return _setting(super_glue_dir, path, SUPER_GLUE_DIR_ENV)


def glue_dir(path: Optional[str] = None) -> Optional[str]:
  """Local GLUE directory in GLUE's own layout, or None.

  The layout GLUE's download script leaves: `SST-2/{train,dev,test}.tsv`,
  `CoLA/...`, `QQP/...`, `STS-B/...`, `QNLI/...`, `RTE/...`, `WNLI/...`,
  `MNLI/{train,dev_matched,dev_mismatched,test_matched,test_mismatched}.tsv`
  (see `prompt_tuning.data.glue_files`), and for MRPC the original
  Microsoft Research Paraphrase Corpus files `MRPC/msr_paraphrase_train.txt`,
  `MRPC/msr_paraphrase_test.txt` with GLUE's `MRPC/dev_ids.tsv`. Only the
  files of the splits read must exist. None means: read TFDS
  `glue/<config>:2.0.0`.

  Args:
    path: the directory; None: the bound one, else the
      `PROMPT_TUNING_GLUE_DIR` environment variable.

  Returns:
    The directory, or None to use TFDS.
  """
  return _setting(glue_dir, path, GLUE_DIR_ENV)


def tfds_data_dir(path: Optional[str] = None) -> Optional[str]:
  """TFDS data directory, or None for TFDS's default (`TFDS_DATA_DIR`, ...).

  Args:
    path: the directory; None: the bound one, else the
      `PROMPT_TUNING_TFDS_DATA_DIR` environment variable.

  Returns:
    The directory, or None.
  """
  return _setting(tfds_data_dir, path, TFDS_DATA_DIR_ENV)
