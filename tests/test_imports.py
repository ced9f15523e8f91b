"""Imports inside the package run one way (issue 13): no cycles — counting imports inside functions too, which
only hide a cycle until the day someone moves them to the top — and nothing imports the command line.

Read from the source with ``ast`` (nothing is imported): an edge is every ``import``/``from … import`` of a module
of the package, except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "taskiq_monitor"
ROOT = Path(__file__).parents[1] / "exporter" / PACKAGE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _runtime_imports(other)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _runtime_imports(child)


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The package's modules that ``node`` imports (a name imported from a package counts as the submodule when
    there is one, else as the package)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
        yield from (t for t in targets if t in MODULES)
        return
    if node.level:
        is_package = MODULES[importer].name == "__init__.py"
        base = importer.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    if source not in MODULES:
        return
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        yield submodule if submodule in MODULES else source


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = {target for node in _runtime_imports(tree) for target in _resolve(name, node)} - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that starts and ends with the same module, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking_blocks() -> None:
    graph = import_graph()
    # tail.py imports the events module at the top and the settings inside cmd_tail().
    assert {"taskiq_monitor.events", "taskiq_monitor.settings"} <= graph["taskiq_monitor.tail"]
    # exemplars.py names metrics' types only under TYPE_CHECKING.
    assert "taskiq_monitor.metrics" not in graph["taskiq_monitor.exemplars"]


def test_find_cycle_reports_a_cycle_through_a_lazy_import() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_nothing_imports_the_command_line() -> None:
    importers = sorted(name for name, targets in import_graph().items() if f"{PACKAGE}.cli" in targets)
    assert importers == [], f"{importers} import {PACKAGE}.cli; shared code belongs in a module of its own"


def test_multiproc_imports_nothing_of_the_package() -> None:
    # exemplars.py and the service's collectors build on it; an import back would be a cycle waiting to happen.
    assert import_graph()[f"{PACKAGE}.multiproc"] == set()


def private_imports() -> list[str]:
    """``from <package module> import _name``: a private name used across modules."""
    found = []
    for name, path in MODULES.items():
        for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and any(True for _ in _resolve(name, node)):
                found += [
                    f"{name} imports {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    assert private_imports() == []
