"""The package's shape: no import cycle between its modules, and every module says what it owns."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "neuralir_jax")


def _imports() -> dict[str, set[str]]:
  """Module -> the package modules it imports, anywhere in its body (lazy imports count too)."""
  graph = {}
  for name in sorted(os.listdir(PACKAGE)):
    if not name.endswith(".py") or name == "__init__.py":
      continue
    module = name[:-3]
    tree = ast.parse(open(os.path.join(PACKAGE, name)).read())
    deps = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == "neuralir_jax":
        deps |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neuralir_jax."):
        deps.add(node.module.split(".")[1])
      elif isinstance(node, ast.Import):
        deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("neuralir_jax.")}
    graph[module] = deps - {module}
  return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}  # 1: on the current path, 2: done.
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 1:
        return path[path.index(dep):] + [dep]
      if dep not in state and (found := visit(dep)):
        return found
    state[node] = 2
    path.pop()
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_no_import_cycle():
  graph = _imports()
  assert {"train", "encoder", "workdir", "steps"} <= set(graph)
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))
  # Reading a workdir, encoding and the model family never need the training loop.
  for module in ("encoder", "workdir", "bi_encoder", "steps", "evaluate", "checkpoint"):
    assert "train" not in graph[module], module


def test_cycle_finder_finds_a_planted_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_opens_with_a_docstring():
  for name in os.listdir(PACKAGE):
    if name.endswith(".py"):
      doc = ast.get_docstring(ast.parse(open(os.path.join(PACKAGE, name)).read()))
      assert doc and len(doc) > 40, name
