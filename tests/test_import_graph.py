"""The package-level import graph of vt_jax has no cycle.

Nodes are vt_jax's subpackages and top-level modules (`train`, `tasks`, `models`, `convert`,
...); an edge A -> B is any import of vt_jax.B inside A, at module level or inside a function
(a deferred import is still a dependency). Read from the source with `ast`, nothing imported.
"""

import ast
import graphlib
import pathlib

import pytest

import vt_jax

PACKAGE = pathlib.Path(vt_jax.__file__).parent


def _imported_modules(tree: ast.AST, module: tuple[str, ...], is_package: bool):
  """Absolute dotted names of everything `tree` imports (relative imports resolved)."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        package = module if is_package else module[:-1]
        anchor = package[:len(package) - (node.level - 1)]
        base = ".".join(anchor + ((base,) if base else ()))
      # `from vt_jax import tasks` imports the subpackage `tasks`: keep the imported names.
      yield from (f"{base}.{alias.name}" for alias in node.names)


def package_graph(root: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
  """{node: nodes it imports}; node = first component below vt_jax."""
  graph = {}
  for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root.parent).with_suffix("").parts  # ('vt_jax', 'train', 'x')
    is_package = parts[-1] == "__init__"
    module = parts[:-1] if is_package else parts
    if len(module) < 2:
      continue  # vt_jax/__init__.py is the root, not a node
    node = module[1]
    deps = graph.setdefault(node, set())
    for name in _imported_modules(ast.parse(path.read_text(), str(path)), module, is_package):
      target = name.split(".")
      if target[0] == "vt_jax" and len(target) > 1 and target[1] != node:
        deps.add(target[1])
  return graph


def test_no_subpackage_imports_one_that_imports_it_back():
  graph = package_graph()
  assert {"train", "tasks", "models", "config_lib", "data"} <= set(graph)
  try:
    order = list(graphlib.TopologicalSorter(graph).static_order())
  except graphlib.CycleError as e:
    raise AssertionError(f"vt_jax's package-level imports form a cycle: {' -> '.join(e.args[1])}"
                         ) from None
  assert set(order) >= set(graph)


def test_graph_reader_sees_a_cycle(tmp_path):
  """The reader finds edges of every import form, so a cycle cannot hide from the test."""
  pkg = tmp_path / "vt_jax"
  for sub in ("a", "b", "c"):
    (pkg / sub).mkdir(parents=True)
    (pkg / sub / "__init__.py").write_text("")
  (pkg / "__init__.py").write_text("")
  (pkg / "a" / "x.py").write_text("from vt_jax import b\n")
  (pkg / "b" / "y.py").write_text("def f():\n  import vt_jax.c.z\n")
  (pkg / "c" / "z.py").write_text("from ..a import x\n")
  graph = package_graph(pkg)
  assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}}
  with pytest.raises(graphlib.CycleError):
    list(graphlib.TopologicalSorter(graph).static_order())
