"""The list of built-in sub-commands; each module registers its own parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _score(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from workers.scorer.command import register

    register(subparsers)


def _topics(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from workers.topics import register

    register(subparsers)


def _broker(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from workers.broker.command import register

    register(subparsers)


def _bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from workers.bench import register

    register(subparsers)


REGISTRARS: list[Registrar] = [_score, _topics, _broker, _bench]
