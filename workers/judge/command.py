"""`riverrun judge`: run the judge until SIGTERM or SIGINT (faust's worker handles both)."""

from __future__ import annotations

import argparse
import logging
import threading

from pydantic import ValidationError

from riverrun.producers.signals import StopSignals
from riverrun.schemas import (
    add_settings_flags,
    collect_section_flags,
)
from riverrun.schemas.settings import explain
from riverrun.workers.judge.metrics import JudgeMetrics
from riverrun.workers.judge.settings import JudgeSettings
from riverrun.workers.judge.state_server import StateServer
from riverrun.workers.runtime.errors import ConfigurationError, RetryableError
from riverrun.workers.runtime.health import HealthServer
from riverrun.workers.runtime.kafka import topic_partitions
from riverrun.workers.runtime.startup import wait_for_kafka

logger = logging.getLogger(__name__)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun judge`."""
    add_settings_flags(parser, JudgeSettings)
    parser.set_defaults(handler=run_judge)


def source_partitions(settings: JudgeSettings) -> int:
    """Partitions of the outcomes topic (the tables follow it); every input topic must exist.

    Raises:
        ConfigurationError: an input topic is missing.
        RetryableError: the broker did not answer.

    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client_config())
    topics = settings.topics
    for role, topic in (("shadow_predictions", topics.shadow_predictions),
                        ("dead_letters", topics.dead_letters), ("registry", topics.models)):
        topic_partitions(admin, topic, role)
    return len(topic_partitions(admin, topics.outcomes, "outcomes"))


def run_judge(args: argparse.Namespace) -> int:
    """Build the settings, recover the tables, judge until a signal."""
    try:
        settings = JudgeSettings(**collect_section_flags(args))
    except ValidationError as exc:
        logger.error("bad configuration: %s", explain(exc))
        return 2
    stopping = threading.Event()
    # Until faust takes over the signals, a stop request ends the wait for Kafka.
    signals = StopSignals(lambda _name: stopping.set()).start()
    try:
        settings.registry.signer()  # refuse a missing key before waiting for anything
        topics = settings.topics
        inputs = [("outcomes", topics.outcomes), ("shadow_predictions", topics.shadow_predictions),
                  ("dead_letters", topics.dead_letters), ("models", topics.models)]  # fmt: skip
        if not wait_for_kafka(settings.kafka, inputs, stopping, "the judge"):
            return 0
        partitions = source_partitions(settings)
    except (ConfigurationError, RetryableError) as exc:
        logger.error("%s", exc)
        return 2
    finally:
        signals.close()
    logger.info("effective settings", extra={"settings": settings.model_dump(mode="json")})
    # faust is imported here only: `riverrun --help` and every other command stay without it.
    import faust

    from riverrun.workers.judge.app import JudgeApp

    options = settings.judge
    metrics = JudgeMetrics()
    state_server = StateServer(options.http_port).start() if options.http_port is not None else None
    judge_app = JudgeApp(settings, partitions=partitions, metrics=metrics,
                         state_server=state_server)
    health = None
    if options.metrics_port is not None:
        health = HealthServer(metrics.registry, lambda: judge_app.ready, port=options.metrics_port)
        health.start()
    judge_app.follow_policies()
    worker = faust.Worker(judge_app.app, loglevel=logging.getLogger().level or "INFO",
                          quiet=True, override_logging=False, redirect_stdouts=False)
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        judge_app.stop()
        if health is not None:
            health.stop()
        if state_server is not None:
            state_server.stop()
    logger.info("judge stopped (exit %d)", code)
    return code
