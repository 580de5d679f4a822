"""Paths the user gives, as the shell would read them: `~` and `$VARS`.

A path typed in a gin binding or a flag (`--gin.MODEL_DIR="'~/runs/rte'"`,
`--cache_dir=$SCRATCH/cache`) reaches the program unexpanded, since the
shell does not look inside quotes; taken literally it would create a folder
named `~` or `$SCRATCH` in the working directory. The entry points expand
them here, once, where the settings are read (`expand_gin_paths`, called by
`gin_utils.parse_gin_command` after the
gin files are parsed, `expand` for flags), so that the library takes plain
paths. A variable that is not set is refused, not left in the path.
"""

import os
import re
from typing import Any, Optional

from prompt_tuning import errors

# `$NAME` or `${NAME}`, as `os.path.expandvars` reads them.
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")
# Settings holding paths: names ending in dir, path or file (or their
# plurals): MODEL_DIR, INITIAL_CHECKPOINT_PATH, DEEP_PROMPT_FILE, output_dir.
_PATH_SETTING = re.compile(r"(^|_)(dir|path|file)s?$", re.IGNORECASE)


class UnsetVariableError(errors.ConfigError):
  """A path names an environment variable that is not set."""


def needs_expansion(path: str) -> bool:
  """Whether `path` starts with `~` or names a `$VARIABLE`."""
  return path.startswith("~") or _VARIABLE.search(path) is not None


def expand(path: Optional[str], setting: str) -> Optional[str]:
  """`path` with a leading `~` and every `$VAR` / `${VAR}` expanded.

  Args:
    path: as the user gave it; None is returned as it is.
    setting: how the user set it (`MODEL_DIR`, `--cache_dir`), for errors.

  Raises:
    UnsetVariableError: `path` names a variable that is not set, or
      `~user` of an unknown user.
  """
  if path is None or not needs_expansion(path):
    return path
  unset = [m.group(1).strip("{}") for m in _VARIABLE.finditer(path)
           if m.group(1).strip("{}") not in os.environ]
  if unset:
    raise UnsetVariableError(
        f"{setting} {path!r} names the environment variable "
        f"{', '.join('$' + v for v in dict.fromkeys(unset))}, which is not "
        "set: set it (export NAME=...) or give the path in full.")
  expanded = os.path.expanduser(os.path.expandvars(path))
  if expanded.startswith("~"):
    raise UnsetVariableError(
        f"{setting} {path!r} starts with {expanded.split(os.sep)[0]!r}, which "
        "names no user's home folder: write ~/... for yours, or the path in "
        "full.")
  return expanded


def is_path_setting(name: str) -> bool:
  """Whether a gin macro or parameter `name` holds paths (by its name:
  `*_DIR`, `*_PATH`, `*_FILE`, `path`, `output_dir`, ...)."""
  return _PATH_SETTING.search(name.rsplit("/", 1)[-1].split(".")[-1]) is not None


def _expanded_value(value: Any, setting: str) -> Any:
  """A string, or a list / tuple of strings, expanded; others unchanged."""
  if isinstance(value, str):
    return expand(value, setting)
  if isinstance(value, (list, tuple)):
    return type(value)(_expanded_value(v, setting) for v in value)
  return value


def expand_gin_paths() -> dict[str, Any]:
  """Expands `~` and `$VARS` in every gin macro or parameter holding paths
  (`is_path_setting`), rebinding it in the parsed (even finalized) config.

  Returns:
    `{setting: expanded value}` of what changed.

  Raises:
    UnsetVariableError: naming the setting and the unset variable.
  """
  # pylint: disable-next=g-import-not-at-top  (gin only where gin is parsed)
  import gin
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  changed = {}
  for (scope, selector), params in list(gin_config._CONFIG.items()):  # pylint: disable=protected-access
    for param, value in list(params.items()):
      name = scope if selector == "gin.macro" else f"{selector}.{param}"
      if not is_path_setting(scope if selector == "gin.macro" else param):
        continue
      new = _expanded_value(value, name)
      if new != value:
        with gin.unlock_config():
          gin.bind_parameter((scope, selector, param), new)
        changed[name] = new
  return changed
