"""The `riverrun` command line: a table of commands, each imported only when it is run.

This is the composition root and the only layer that reads the environment (through the
settings classes) or configures logging. `riverrun --help` lists the table without importing
any command; `riverrun COMMAND ...` imports that command's module alone, which builds its flags
from its settings and imports its heavy dependencies (River, faust, SciPy) only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec

Handler = Callable[[argparse.Namespace], int]

# What the workers need beyond the client: `pip install 'riverrun[server]'` brings them.
SERVER_MODULES = ("river", "faust", "numpy", "scipy", "prometheus_client", "yaml", "rich")


@dataclass(frozen=True)
class Command:
    """One sub-command: its summary for `riverrun --help`, and where its flags are added.

    Each registrar is "module:function" and receives the command's parser, or, when `actions`
    is set, the command's sub-commands (`riverrun models release|list|...`), which several
    modules contribute to.
    """

    name: str
    summary: str
    registrars: tuple[str, ...]
    actions: bool = False
    # Asks the broker and gives up: if it does not answer, say so at once, in one line.
    needs_kafka: bool = False


COMMANDS = (
    Command("broker", "Run a local Kafka broker (Tansu or Apache Kafka), or check what a broker "
            "guarantees.", ("riverrun.workers.broker.command:register",)),
    Command("topics", "Administer riverrun's topics.",
            ("riverrun.workers.broker.topics:register",), needs_kafka=True),
    Command("train", "Fit StandardScaler | LogisticRegression on a dataset and write a model file.",
            ("riverrun.workers.tools.train:register",)),
    Command("score", "Score requests from Kafka with River models (a consumer-group worker).",
            ("riverrun.workers.scorer.command:register",)),
    Command("learn", "Learn a model online from labelled feedback and publish its snapshots.",
            ("riverrun.workers.learner.command:register",)),
    Command("models", "Administer models: release, list, show, history, verify, deploy, promote, "
            "rollback, status, keys.", (
                "riverrun.workers.registry.command:register",
                "riverrun.workers.learner.command:register_verify",
                "riverrun.workers.routing.command:register",
                "riverrun.workers.keys.command:register",
            ), actions=True, needs_kafka=True),
    Command("judge", "Judge the live policies from their outcomes; promote, roll back, re-weight.",
            ("riverrun.workers.judge.command:register",)),
    Command("replay", "Stream a dataset into requests and feedback.",
            ("riverrun.producers.cli:register",), needs_kafka=True),
    Command("dlq", "Read dead letters, and send chosen ones back once their cause is fixed.",
            ("riverrun.workers.tools.dlq:register",), needs_kafka=True),
    Command("bench", "Measure the scorer against the raw pipe and the model, in one run.",
            ("riverrun.workers.tools.bench:register",)),
    Command("schemas", "Publish the event contracts.",
            ("riverrun.workers.tools.schemas_export:register",)),
    Command("demo", "Run the whole pipe on the embedded broker.",
            ("riverrun.workers.tools.demo:register",)),
    Command("top", "A live view: versions and shares, throughput, lag, latency, decisions.",
            ("riverrun.workers.tools.top.command:register",)),
)  # fmt: skip
_BY_NAME = {command.name: command for command in COMMANDS}


def _chosen(argv: Sequence[str]) -> Command | None:
    """The command named on the line: the first word that is one (global flags come first)."""
    for word in argv:
        if word in _BY_NAME:
            return _BY_NAME[word]
    return None


def _register(command: Command, parser: argparse.ArgumentParser) -> None:
    target: object = parser
    if command.actions:
        target = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for registrar in command.registrars:
        module, _, function = registrar.partition(":")
        getattr(importlib.import_module(module), function)(target)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line; only the command that `argv` names gets its flags (and its imports)."""
    parser = argparse.ArgumentParser(
        prog="riverrun",
        description="Event-driven Model-on-Demand stream processing with online River models.",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR [default INFO]"
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "text", "json"),
        default="auto",
        help="Log lines as text on a terminal, JSON lines otherwise (auto).",
    )
    parser.add_argument(
        "--profile",
        choices=("development", "production"),
        default=None,
        help="production refuses plaintext Kafka, unverified TLS and the development signing "
        "key [env RIVERRUN_PROFILE, default development]",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(argv)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.summary, description=command.summary)
        if command is chosen:
            _register(command, sub)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line, with the flags of the command it names."""
    return build_parser(argv).parse_args(argv)


def missing_server_modules() -> list[str]:
    """The server's dependencies this environment lacks (found without importing them)."""
    return [name for name in SERVER_MODULES if find_spec(name) is None]


def configure_logging(level: str, log_format: str) -> None:
    """JSON lines in containers and pipes, readable text on a terminal."""
    from riverrun.workers.runtime.logfmt import JsonFormatter, RepeatedLines

    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("librdkafka").filters[:] = [RepeatedLines()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `riverrun` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    missing = missing_server_modules()
    if missing:
        print(
            "riverrun: the command line runs the workers, which need the server extra "
            f"(missing: {', '.join(missing)}): pip install 'riverrun[server]'",
            file=sys.stderr,
        )
        return 2
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    from riverrun.workers.profile import Profile, ProfileSettings, profile_violations

    profile = Profile(args.profile) if args.profile else ProfileSettings().profile
    refused = profile_violations(profile, args)
    if refused:
        log = logging.getLogger(__name__)
        for problem in refused:
            log.error("the %s profile refuses to start: %s", profile.value, problem)
        return 2
    from riverrun.workers.runtime.errors import ConfigurationError, RiverrunError

    handler: Handler = args.handler
    try:
        if _BY_NAME[args.command].needs_kafka:
            _require_kafka(args)
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except RiverrunError as exc:  # classified: one line says what to do; a bug keeps its trace
        logging.getLogger(__name__).error("%s", exc)
        return 2 if isinstance(exc, ConfigurationError) else 1


def _require_kafka(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from riverrun.schemas import KafkaSettings, RiverrunSettings, collect_section_flags
    from riverrun.workers.runtime.startup import require_kafka

    class Connection(RiverrunSettings):
        kafka: KafkaSettings = KafkaSettings()

    flags = collect_section_flags(args)
    try:
        connection = Connection(**({"kafka": flags["kafka"]} if "kafka" in flags else {}))
    except ValidationError:
        return  # the command itself says which setting is wrong
    require_kafka(connection.kafka)


if __name__ == "__main__":
    sys.exit(main())
