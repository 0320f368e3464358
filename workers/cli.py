"""The `riverrun` command line: parses flags, builds settings, configures logging, dispatches.

This is the composition root and the only layer that reads the environment (through the
settings classes) or configures logging. Sub-commands from packages the server must not import
(the replay of `producers/`) arrive through the `riverrun.commands` entry-point group.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _builtin_registrars() -> list[Registrar]:
    # Imported here so that `riverrun --help` stays fast and a broken optional part names itself.
    from riverrun.workers.commands import REGISTRARS

    return list(REGISTRARS)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, built-in commands first, then entry-point plugins."""
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
    for register in _builtin_registrars():
        register(subparsers)
    for entry in sorted(entry_points(group="riverrun.commands"), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def configure_logging(level: str, log_format: str) -> None:
    """JSON lines in containers and pipes, readable text on a terminal."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        from riverrun.workers.runtime.logfmt import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    from riverrun.workers.runtime.kafka import RepeatedLines

    librdkafka = logging.getLogger("librdkafka")
    librdkafka.filters[:] = [RepeatedLines()]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `riverrun` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    from riverrun.workers.profile import Profile, ProfileSettings, profile_violations

    profile = Profile(args.profile) if args.profile else ProfileSettings().profile
    refused = profile_violations(profile, args)
    if refused:
        log = logging.getLogger(__name__)
        for problem in refused:
            log.error("the %s profile refuses to start: %s", profile.value, problem)
        return 2
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
