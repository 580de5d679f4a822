"""JAX's persistent compilation cache as the entry points' start-up sets it:
on by default, every compilation kept, so that the same program compiled
again loads from disk; `--nocompilation_cache` or
`PROMPT_TUNING_COMPILATION_CACHE=0` leave JAX's settings alone and write
nothing. (The test suite itself runs with it off: see conftest.py.)"""

import pathlib

import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning import cli

_JAX_SETTINGS = ("jax_compilation_cache_dir",
                 "jax_persistent_cache_min_compile_time_secs",
                 "jax_persistent_cache_min_entry_size_bytes")
_HIT = "/jax/compilation_cache/cache_hits"


@pytest.fixture(autouse=True)
def _jax_cache_restored(monkeypatch, tmp_path):
  """JAX's cache settings and state as they were before the test; HOME and
  JAX's own cache variable out of the way."""
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.delenv(cli.JAX_COMPILATION_CACHE_ENV, raising=False)
  saved = {name: getattr(jax.config, name) for name in _JAX_SETTINGS}
  compilation_cache.reset_cache()
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


def _start(argv: list[str]) -> None:
  """An entry point's start-up: its flags parsed."""
  cli.parse_flags(argv, cli.new_flags(), "doc")


def _compile_and_run(scale: float) -> np.ndarray:
  """Compiles (a new trace every call) and runs a program `[7]`."""
  return np.asarray(jax.jit(lambda x: jnp.tanh(x * scale) - 0.25)(
      jnp.arange(7.0)))


def _files(path: pathlib.Path) -> list[str]:
  return sorted(p.name for p in path.rglob("*")) if path.exists() else []


def test_same_program_compiled_again_loads_from_the_cache(monkeypatch,
                                                          tmp_path):
  cache = tmp_path / "jax_cache"
  monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, str(cache))
  _start([])
  assert jax.config.jax_compilation_cache_dir == str(cache)
  first = _compile_and_run(3.0)
  written = _files(cache)
  assert any(name.startswith("jit_") for name in written), written
  hits = []

  def listen(event: str, **_) -> None:
    if event == _HIT:
      hits.append(event)

  jax.monitoring.register_event_listener(listen)
  try:
    jax.clear_caches()  # Only the disk still has the executable.
    second = _compile_and_run(3.0)
  finally:
    jax.monitoring.unregister_event_listener(listen)
  assert hits
  np.testing.assert_array_equal(first, second)
  assert _files(cache) == written


@pytest.mark.parametrize("argv,setting", [
    (["--nocompilation_cache"], "DIR"),
    ([], "0"),
    ([], "off"),
    (["--validate_only"], "DIR"),  # Validation writes nothing.
])
def test_off_switch_writes_nothing(monkeypatch, tmp_path, argv, setting):
  cache = tmp_path / "jax_cache"
  monkeypatch.setenv(cli.COMPILATION_CACHE_ENV,
                     str(cache) if setting == "DIR" else setting)
  _start(argv)
  assert jax.config.jax_compilation_cache_dir is None
  _compile_and_run(5.0)
  assert not cache.exists() and not (tmp_path / "home").exists()


def test_cache_directory_default_and_overrides(monkeypatch, tmp_path):
  monkeypatch.delenv(cli.COMPILATION_CACHE_ENV)
  assert cli.compilation_cache_dir() == str(
      tmp_path / "home" / ".cache" / "prompt_tuning" / "jax_cache")
  monkeypatch.setenv(cli.JAX_COMPILATION_CACHE_ENV, str(tmp_path / "jax"))
  assert cli.compilation_cache_dir() == str(tmp_path / "jax")
  monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, str(tmp_path / "ours"))
  assert cli.compilation_cache_dir() == str(tmp_path / "ours")
  assert cli.compilation_cache_dir(enabled=False) is None
  monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, "0")
  assert cli.compilation_cache_dir() is None
