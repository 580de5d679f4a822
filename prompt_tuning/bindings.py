"""Arguments that a configuration layer binds for library functions.

The library takes plain arguments and imports no configuration system. A few
settings are read deep inside it, where no caller can pass them: where the
data lives (`data.locations`), the vocabulary (`data.vocab`), the mixing cap
(`data.mixing`). Such a function fills a parameter its caller left out from
`bound(fn)`: what the source installed for `fn` binds, by parameter name.

The gin entry layer (`prompt_tuning.gin_configurables`) installs gin's
bindings as each source, so that `prompt_tuning.data.locations.super_glue_dir
.path = "/data/super_glue"` in a gin file reaches `locations.super_glue_dir()`
wherever the library calls it. Without a source nothing is bound.
"""

from typing import Any, Callable, Mapping, Optional

Source = Callable[[], Mapping[str, Any]]

_SOURCES: dict[Callable[..., Any], Source] = {}


def install(fn: Callable[..., Any],
            source: Optional[Source]) -> Optional[Source]:
  """Makes `source()` the bound arguments of `fn` (None: nothing bound);
  returns the source it replaces."""
  previous = _SOURCES.pop(fn, None)
  if source is not None:
    _SOURCES[fn] = source
  return previous


def bound(fn: Callable[..., Any]) -> Mapping[str, Any]:
  """The arguments bound for `fn` now, by parameter name (empty if none)."""
  source = _SOURCES.get(fn)
  return dict(source()) if source is not None else {}


def argument(fn: Callable[..., Any], name: str, given: Any,
             default: Any = None) -> Any:
  """`given` unless it is None, else the bound `name` of `fn`, else
  `default`: the precedence of an argument a caller may leave out."""
  if given is not None:
    return given
  return bound(fn).get(name, default)
