"""Who may import whom: schemas nothing of ours; workers the client only where it composes both."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"schemas", "producers", "workers"}
# Command-line composition roots: they drive the client side for demos and training data.
WORKERS_MAY_IMPORT_PRODUCERS = {"command.py", "demo.py", "train.py"}


def ours_imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & OURS


def test_schemas_import_nothing_of_ours() -> None:
    for path in sorted((ROOT / "schemas").rglob("*.py")):
        assert ours_imported(path) <= {"schemas"}, path.name


def test_workers_import_producers_only_in_composition_roots() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "workers").rglob("*.py"))
        if "producers" in ours_imported(path) and path.name not in WORKERS_MAY_IMPORT_PRODUCERS
    ]
    assert not offenders
