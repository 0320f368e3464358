"""The house's floors, read from the code's own imports: nothing imports upward, nothing circles.

    cli, profile      the command line
    tools             commands that are not workers (bench, demo, train, top, schema export)
    scorer, learner, judge      the roles
    routing, registry, keys     what the roles share about models
    runtime, broker             Kafka plumbing and local brokers, knowing no role
    producers                   the client (imports the contracts only)
    schemas                     the contracts (imports nothing of ours)

An import may go down or sideways, never up, and the packages' import graph has no cycle. Every
import of ours goes through the `riverrun.` namespace: a bare `schemas`, `workers` or
`producers` would load a second copy of a module (and two classes of one exception).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("schemas", "producers", "workers")
FLOORS = {
    "schemas": 0,
    "producers": 1,
    "workers.runtime": 2, "workers.broker": 2,
    "workers.routing": 3, "workers.registry": 3, "workers.keys": 3,
    "workers.scorer": 4, "workers.learner": 4, "workers.judge": 4,
    "workers.tools": 5,
    "workers.cli": 6, "workers.profile": 6, "workers": 6,
}  # fmt: skip


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the three folders, by its installed name without `riverrun.`."""
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imports_of(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in a file, at any depth, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield node.lineno, ".".join([*base, *(node.module or "").split(".")]).strip(".")
            elif node.module:
                yield node.lineno, node.module


def unit_of(module: str) -> str:
    """The floor unit a module belongs to: its most specific prefix in FLOORS."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in FLOORS:
            return prefix
    raise AssertionError(f"{module} is on no floor: add its package to FLOORS")


def ours() -> dict[str, set[str]]:
    """Unit -> the units it imports (riverrun's own only)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules():
        for _line, imported in imports_of(name, path):
            if imported.startswith("riverrun."):
                graph[unit_of(name)].add(unit_of(imported.removeprefix("riverrun.")))
    return graph


def test_every_import_of_ours_goes_through_the_namespace() -> None:
    bare = []
    for folder in (*FOLDERS, "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for line, imported in imports_of(name, path):
                if imported.split(".")[0] in FOLDERS and not imported.startswith("tests"):
                    bare.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not bare


def test_nothing_imports_a_floor_above_its_own() -> None:
    upward = [
        f"{unit} (floor {FLOORS[unit]}) imports {other} (floor {FLOORS[other]})"
        for unit, others in ours().items()
        for other in others
        if FLOORS[other] > FLOORS[unit]
    ]
    assert not upward


def test_the_packages_import_graph_has_no_cycle() -> None:
    graph = ours()
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for other in sorted(graph.get(unit, ())):
            if other == unit:
                continue
            if state.get(other) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, unit, other]))
            if other not in state:
                visit(other, [*path, unit])
        state[unit] = 2

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [])


def test_modules_import_each_other_without_cycles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules():
        for _line, imported in imports_of(name, path):
            if imported.startswith("riverrun."):
                graph[name].add(imported.removeprefix("riverrun."))
    known = set(graph) | {name for name, _ in modules()}
    # `from package import name` may name a module: count it as that module.
    resolved = {m: {i for i in deps if i in known} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(resolved.get(module, ())):
            # A package's __init__ importing its own modules is how packages work.
            if other == module or other.startswith(module + ".") or module.startswith(other + "."):
                continue
            if state.get(other) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, module, other]))
            if other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in sorted(resolved):
        if module not in state:
            visit(module, [])


def test_the_client_and_the_contracts_import_no_worker() -> None:
    graph = ours()
    assert graph.get("schemas", set()) <= {"schemas"}
    assert graph.get("producers", set()) <= {"schemas", "producers"}
