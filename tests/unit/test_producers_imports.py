from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PRODUCERS = Path(__file__).resolve().parents[2] / "producers"
OURS = {"schemas", "producers", "workers"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_producers_import_only_schemas_of_ours() -> None:
    files = sorted(PRODUCERS.rglob("*.py"))
    assert files
    for path in files:
        ours = imported_packages(path) & OURS
        assert ours <= {"schemas", "producers"}, f"{path.name} imports {sorted(ours)}"


def test_importing_producers_loads_no_worker_module() -> None:
    code = (
        "import sys, producers, producers.cli, producers.replay; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'workers'); "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
