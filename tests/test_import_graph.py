"""The package's import graph has no circle, counting the imports inside
functions too (a function-level import must never hide one).

    .venv/bin/python -m pytest tests/test_import_graph.py -q

prints nothing on success; on failure it names the circle.
"""

import ast
import pathlib

import helpers

PACKAGE = "prompt_tuning"


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  root = helpers.REPO_ROOT
  found = {_module_name(p, root): p
           for p in (root / PACKAGE).rglob("*.py")}
  # `tasks/` and `configs/` install as prompt_tuning.tasks / .configs.
  for extra in ("tasks", "configs"):
    for p in (root / extra).rglob("*.py"):
      found[f"{PACKAGE}." + _module_name(p, root)] = p
  return found


def _imports(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
  """The package modules `path` imports anywhere in it (top level or in a
  function): `import a.b`, `from a import b` (module b, else package a),
  relative imports resolved against `name`."""
  is_package = path.name == "__init__.py"
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = name.split(".")
        anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join(anchor + ([base] if base else []))
      targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known
                 else base for alias in node.names]
    else:
      continue
    for target in targets:
      while target and target not in known:  # `import a.b.c` of a package.
        target = target.rpartition(".")[0]
      if target and target != name:
        out.add(target)
  return out


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
  """One circle of `graph` as [a, b, ..., a], or [] if it has none."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    state[node] = "done"
    stack.pop()
    return []

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return []


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  known = set(modules)
  graph = {}
  for name, path in modules.items():
    targets = _imports(path, name, known)
    # A package's __init__ importing its own submodules is how a package
    # exposes them, not a dependency of those submodules on it.
    graph[name] = {t for t in targets if not (
        path.name == "__init__.py" and t.startswith(name + "."))}
  return graph


def test_the_graph_sees_function_level_imports():
  graph = _graph()
  # cli imports training.distributed inside a function (after start-up).
  assert "prompt_tuning.training.distributed" in graph["prompt_tuning.cli"]


def test_no_import_circle():
  cycle = _find_cycle(_graph())
  assert not cycle, "import circle: " + " -> ".join(cycle)


def test_the_finder_finds_a_circle():
  assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [
      "a", "b", "c", "a"]
  assert _find_cycle({"a": {"b"}, "b": set()}) == []
