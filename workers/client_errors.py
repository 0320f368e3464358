"""librdkafka's error callback for every worker: fatal errors at once, broker trouble throttled.

librdkafka retries an unreachable broker on its own and reports each failure; a worker logs
the first and then at most one line every few seconds, so an outage is visible but not a flood.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError


class ClientErrorLog:
    """A callable for the `error_cb` option of a consumer or producer."""

    def __init__(self, logger: logging.Logger, bootstrap_servers: str, every_s: float = 10.0) -> None:
        self._logger = logger
        self._bootstrap_servers = bootstrap_servers
        self._every_s = every_s
        self._last = float("-inf")

    def __call__(self, err: KafkaError) -> None:
        """Log a fatal error every time, any other at most once per `every_s`."""
        if err.fatal():
            self._logger.error("fatal Kafka client error: %s", err)
            return
        now = time.monotonic()
        if now - self._last > self._every_s:
            self._last = now
            self._logger.warning(
                "Kafka not reachable or unhappy (%s); still trying %s", err, self._bootstrap_servers
            )
