"""Waiting for Kafka at start: a worker started before its broker says why it waits, then goes on.

Orchestrators start everything at once, so a worker whose broker (or topics) is not there yet
waits with a clear line every few seconds instead of exiting into a restart loop. The broker is
waited for until the worker is stopped; a topic that is still missing after `topic_grace_s`
once the broker answers is a configuration error, named by its setting.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException

from riverrun.schemas import KafkaSettings
from riverrun.workers.runtime.errors import ConfigurationError, RetryableError
from riverrun.workers.runtime.kafka import partitions_in

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("librdkafka")


def _quiet(err: KafkaError) -> None:
    # Connection failures are what this module reports on its own, once per interval.
    if err.fatal():
        logger.error("fatal Kafka client error while waiting: %s", err)


def wait_for_kafka(
    kafka: KafkaSettings,
    topics: Sequence[tuple[str, str]],
    stop: threading.Event,
    who: str,
    topic_grace_s: float = 60.0,
    log_every_s: float = 10.0,
) -> bool:
    """Block until the broker answers and `topics` exist; False when stopped first.

    `topics` pairs each topic's setting name (`models`, `examples`…) with the topic, so the
    message for a missing one names `RIVERRUN_TOPICS__<NAME>`.

    Raises:
        ConfigurationError: a topic is still missing `topic_grace_s` after the broker answered.

    """
    consumer = Consumer(kafka.client_config({
        "group.id": f"riverrun-startup-{uuid.uuid4().hex[:8]}",  # metadata only, never joined
        "error_cb": _quiet,
        # Each refused connection is a librdkafka log line; the wait says it once per interval.
        "log_level": 2,
        "logger": _librdkafka_logger,
    }))  # fmt: skip
    started = time.monotonic()
    last_said = float("-inf")
    topics_missing_since: float | None = None
    try:
        while not stop.is_set():
            try:
                metadata = consumer.list_topics(timeout=5.0)
            except KafkaException as exc:
                why = f"Kafka not reachable ({exc.args[0].str() if exc.args else exc})"
                topics_missing_since = None
            else:
                try:
                    for name, topic in topics:
                        partitions_in(metadata, topic, name)
                except ConfigurationError as missing:
                    why = str(missing)
                    now = time.monotonic()
                    topics_missing_since = topics_missing_since or now
                    if now - topics_missing_since >= topic_grace_s:
                        raise
                else:
                    if time.monotonic() - started > 1.0:
                        logger.info("Kafka at %s answers: starting %s after %.0f s",
                                    kafka.bootstrap_servers, who, time.monotonic() - started)
                    return True
            now = time.monotonic()
            if now - last_said >= log_every_s:
                last_said = now
                logger.warning("waiting for Kafka at %s before starting %s: %s (%.0f s so far)",
                               kafka.bootstrap_servers, who, why, now - started)
            stop.wait(1.0)
        return False
    finally:
        consumer.close()


class KafkaUnreachable(RetryableError):
    """The broker did not answer a command that needs it now (a worker waits instead)."""


def require_kafka(kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
    """Return once the broker answers a metadata request; raise within `timeout_s` if not.

    librdkafka retries a refused connection quietly here: the one line that matters is this
    function's error, which names the address and the setting.

    Raises:
        KafkaUnreachable: no answer within `timeout_s`.

    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka.client_config({"log_level": 0, "error_cb": _silent,
                                             "logger": _librdkafka_logger}))  # fmt: skip
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc
        raise KafkaUnreachable(
            f"Kafka at {kafka.bootstrap_servers} does not answer ({reason}, {timeout_s:.0f} s): "
            "start it, or set RIVERRUN_KAFKA__BOOTSTRAP_SERVERS (--bootstrap-servers) to a "
            "broker that runs"
        ) from exc


def _silent(_err: KafkaError) -> None:
    """Swallow librdkafka's connection errors: `require_kafka` says it once."""
