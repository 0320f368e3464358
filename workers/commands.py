"""The list of built-in sub-commands; each module registers its own parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _score(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.scorer.command import register

    register(subparsers)


def _topics(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.broker.topics import register

    register(subparsers)


def _broker(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.broker.command import register

    register(subparsers)


def _bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.tools.bench import register

    register(subparsers)


def _schemas(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.tools.schemas_export import register

    register(subparsers)


def _demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.tools.demo import register

    register(subparsers)


def _top(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.tools.top.command import register

    register(subparsers)


def _train(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.tools.train import register

    register(subparsers)


def _learn(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.learner.command import register

    register(subparsers)


def _models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.registry.command import register

    register(subparsers)


def _models_verify(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # `riverrun models` belongs to the registry; the learner adds its `verify` action to it.
    from riverrun.workers.learner.command import add_verify_command

    add_verify_command(_actions_of(subparsers, "models", "Administer models."))


def _models_policy(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Policies (deploy, promote, rollback, status) are routing's actions under `riverrun models`.
    from riverrun.workers.routing.command import add_policy_commands

    add_policy_commands(_actions_of(subparsers, "models", "Administer models."))


def _judge(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from riverrun.workers.judge.command import register

    register(subparsers)


def _actions_of(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Return the actions of command `name`, creating it when no registrar has yet."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text)
        return parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise TypeError(f"command {name!r} has no actions to add to")


REGISTRARS: list[Registrar] = [
    _broker, _topics, _train, _score, _learn, _models, _models_verify, _models_policy, _judge,
    _bench, _schemas, _demo, _top,
]
