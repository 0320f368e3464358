"""`riverrun learn` (run a model's learner until SIGTERM) and `riverrun models verify`.

The flags come from the settings alone; the learner (River, Prometheus) is imported by the
handlers, so that building the command line stays quick.
"""

from __future__ import annotations

import argparse
import logging
import threading

from pydantic import Field, ValidationError

from riverrun.producers.signals import StopSignals
from riverrun.schemas import (
    KafkaSettings,
    RiverrunSettings,
    TopicSettings,
    add_settings_flags,
    collect_section_flags,
    explain,
)
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.registry import Registry, RegistrySettings
from riverrun.workers.runtime.errors import ConfigurationError, FatalError, RiverrunError

logger = logging.getLogger(__name__)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun learn`."""
    add_settings_flags(parser, LearnerSettings)
    parser.add_argument(
        "--max-examples", type=int, default=None, help="Stop after learning this many (tests)."
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=None, help="Stop after this many quiet seconds."
    )
    parser.set_defaults(handler=run_learn)


def run_learn(args: argparse.Namespace) -> int:
    """Build the settings, start the learner, stop it cleanly on a signal."""
    from riverrun.workers.learner.log_learner import LogLearner
    from riverrun.workers.learner.loop import Learner
    from riverrun.workers.learner.metrics import LearnerMetrics
    from riverrun.workers.runtime.health import HealthServer
    from riverrun.workers.runtime.heap import settle_heap
    from riverrun.workers.runtime.startup import wait_for_kafka

    try:
        settings = LearnerSettings(**collect_section_flags(args))
    except ValidationError as exc:
        logger.error("bad configuration: %s", explain(exc))
        return 2
    logger.info("effective settings", extra={"settings": settings.model_dump(mode="json")})
    metrics = LearnerMetrics()
    registry = Registry(settings.kafka, settings.topics, settings.registry)
    try:
        if settings.learner.stage == "keys":
            from riverrun.workers.learner.key_group import KeyGroupLearner

            learner: Learner | LogLearner | KeyGroupLearner = KeyGroupLearner(settings, registry)
        elif settings.learner.stage == "learn":
            learner = LogLearner(settings, registry, metrics)
        else:
            learner = Learner(settings, registry, metrics)
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 2

    stopping = threading.Event()

    def on_signal(name: str) -> None:
        logger.info("received %s: finishing the batch, committing, publishing a snapshot", name)
        stopping.set()
        learner.stop()

    signals = StopSignals(on_signal).start()
    health = None
    if settings.learner.metrics_port is not None:
        health = HealthServer(
            metrics.registry, learner.is_ready, port=settings.learner.metrics_port
        )
        health.start()
    try:
        topics = [("models", settings.topics.models), ("examples", settings.topics.examples)]
        who = f"the learner of {settings.learner.model}"
        if settings.learner.stage != "both":
            who = f"the {settings.learner.stage} stage of the learner of {settings.learner.model}"
        if not wait_for_kafka(settings.kafka, topics, stopping, who):
            return 0
        settle_heap()
        summary = learner.run(max_examples=args.max_examples, idle_timeout=args.idle_timeout)
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 2
    except (FatalError, RiverrunError) as exc:
        logger.error("stopping without committing: %s", exc)
        return 3
    finally:
        registry.close()
        if health is not None:
            health.stop()
        signals.close()
    stage = settings.learner.stage
    joined = (f"joined {summary.labels_joined} labels of {settings.learner.model}, "
              f"{summary.labels_unjoined} unjoined")  # fmt: skip
    learned = (f"learned {summary.examples_learned} examples of {settings.learner.model}"
               f"@{summary.version} (next offset {summary.next_offset}); "
               f"{summary.snapshots_published} snapshots, last #{summary.last_snapshot}")  # fmt: skip
    keys = (f"learned {summary.examples_learned} labels of the keys of {settings.learner.model}"
            f"@{summary.version} it owned (examples read to offset {summary.next_offset}); "
            f"{summary.snapshots_published} writes")  # fmt: skip
    logger.info("%s", {"join": joined, "learn": learned, "keys": keys}.get(
        stage, f"{learned}; {joined}"))
    return 0


class VerifySettings(RiverrunSettings):
    """Settings of `riverrun models verify`."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)


def register_verify(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `verify` under `riverrun models`."""
    parser = actions.add_parser(
        "verify",
        help="Replay the examples log and check a snapshot's artifact byte for byte.",
    )
    parser.add_argument("reference", metavar="NAME@VERSION#SNAPSHOT", help="e.g. fraud@3#12")
    add_settings_flags(parser, VerifySettings)
    parser.set_defaults(handler=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """Print OK or MISMATCH with both digests; exit 0 when the bytes match, 1 when not."""
    from riverrun.workers.learner.verify import verify_snapshot

    try:
        settings = VerifySettings(**collect_section_flags(args))
    except ValidationError as exc:
        logger.error("bad configuration: %s", explain(exc))
        return 2
    try:
        with Registry(settings.kafka, settings.topics, settings.registry) as registry:
            verdict = verify_snapshot(registry, settings.kafka, settings.topics, args.reference)
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return 2
    except RiverrunError as exc:
        logger.error("could not verify %s: %s", args.reference, exc)
        return 2
    word = "OK" if verdict.matches else "MISMATCH"
    print(
        f"{word} {verdict.reference}: replayed {verdict.examples} examples "
        f"[{verdict.start}, {verdict.end}) of {settings.topics.examples}\n"
        f"  published sha256 {verdict.expected_sha256}\n"
        f"  replayed  sha256 {verdict.replayed_sha256}"
    )
    return 0 if verdict.matches else 1
