"""The command line builds its parser without the heavy parts: `riverrun --help` and every
`riverrun COMMAND [ACTION] --help` leave River, SciPy, faust and matplotlib unimported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from riverrun.workers.cli import COMMANDS

HEAVY = ("river", "scipy", "faust", "matplotlib")

# Run in a fresh interpreter: this test process has imported all of them already.
PROBE = """
import argparse, contextlib, io, sys
from riverrun.workers.cli import build_parser
heavy = {heavy!r}
for argv in {argvs!r}:
    parser = build_parser(argv)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        parser.parse_args([*argv, "--help"])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    if loaded:
        sys.exit(f"`riverrun {{' '.join(argv)}} --help` imported {{loaded[:5]}}")
"""


def actions_of(command: str) -> list[list[str]]:
    from riverrun.workers.cli import build_parser

    parser = build_parser([command])
    found = [[command]]
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        sub = action.choices[command]
        for inner in sub._actions:
            if hasattr(inner, "choices") and isinstance(inner.choices, dict):
                found += [[command, name] for name in inner.choices]
    return found


@pytest.mark.parametrize("command", ["", *(c.name for c in COMMANDS)])
def test_help_imports_nothing_heavy(command: str) -> None:
    argvs = actions_of(command) if command else [[]]
    probe = PROBE.format(heavy=HEAVY, argvs=argvs)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or result.stdout


def test_every_models_action_is_on_the_line() -> None:
    assert {tuple(a) for a in actions_of("models")} >= {
        ("models", name) for name in ("release", "list", "show", "history", "verify", "deploy",
                                      "promote", "rollback", "status")}  # fmt: skip
