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


def _schemas(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from workers.schemas_command import register

    register(subparsers)


def _demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from workers.demo import register

    register(subparsers)


def _train(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from workers.train import register

    register(subparsers)


def _models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # One `models` parser; each part that administers models adds its own actions to it.
    from workers.registry.command import register

    register(subparsers)


REGISTRARS: list[Registrar] = [_broker, _topics, _train, _score, _bench, _schemas, _demo, _models]
