"""`riverrun schemas export`: write the JSON Schema and AsyncAPI files of the contracts."""

from __future__ import annotations

import argparse
from pathlib import Path

from riverrun.schemas.export import HERE, write_all


def register(parser: argparse.ArgumentParser) -> None:
    """Add `riverrun schemas export`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="Write JSON Schema files and an AsyncAPI document.")
    export.add_argument(
        "--out", type=Path, default=HERE, help="Directory to write into [the schemas package]."
    )
    export.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    for path in write_all(args.out):
        print(path)
    return 0
