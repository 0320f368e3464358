"""The `riverrun replay` sub-command: its flags, and the handler that runs the replay."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from pydantic import ValidationError

from riverrun.producers.client import ClientError
from riverrun.producers.signals import StopSignals
from riverrun.schemas import add_settings_flags, collect_section_flags, explain

logger = logging.getLogger(__name__)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun replay`."""
    from riverrun.producers.replay import ReplaySettings

    parser.description = (
        "Stream a dataset into the requests topic at a chosen rate, and a seeded share of its "
        "labels into feedback after a delay. Prints a one-line JSON summary."
    )
    add_settings_flags(parser, ReplaySettings)
    parser.set_defaults(handler=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    """Handle `riverrun replay`: 0 when every record was delivered, even after a stop signal."""
    from riverrun.producers.replay import ReplaySettings, run_with_progress

    try:
        settings = ReplaySettings.from_overrides(collect_section_flags(args))
    except ValidationError as exc:
        print(f"riverrun replay: bad configuration: {explain(exc)}", file=sys.stderr)
        return 2
    logger.info(
        "replay settings: %s",
        {
            "kafka": settings.kafka.redacted(),
            "topics": settings.topics.all(),
            "replay": settings.replay.model_dump(mode="json"),
        },
    )
    stop = threading.Event()

    def on_signal(name: str) -> None:
        logger.info("%s received: stopping the replay", name)
        stop.set()

    try:
        with StopSignals(on_signal):
            summary = run_with_progress(settings, stop)
    except ClientError as exc:  # the client's own errors say what to do, in one line
        print(f"riverrun replay: {exc}", file=sys.stderr)
        return 1
    print(summary.model_dump_json(), flush=True)
    return 1 if summary.delivery_failures else 0
