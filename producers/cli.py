"""The `riverrun replay` sub-command, contributed to the CLI through an entry point."""

from __future__ import annotations

import argparse


def register_replay(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `riverrun replay` to the command line."""
    parser = subparsers.add_parser("replay", help="Stream a dataset into requests and feedback.")
    parser.set_defaults(handler=lambda args: 0)
