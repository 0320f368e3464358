"""librdkafka's error callback and log lines for every worker: fatal errors at once, broker
trouble throttled.

librdkafka retries an unreachable broker on its own and reports each failure; a worker logs
the first and then at most one line every few seconds, so an outage is visible but not a flood.
"""

from __future__ import annotations

import logging
import re
import time

from confluent_kafka import KafkaError

_DIGITS = re.compile(r"\d+")


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


class RepeatedLines(logging.Filter):
    """Drops a log line that repeats one let through less than `every_s` ago (digits aside).

    librdkafka logs every refused reconnect (several a second while a broker is away); the
    first of a kind passes, then one per interval saying how many were left out.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self._every_s = every_s
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the record through unless it repeats a recent one."""
        key = _DIGITS.sub("", record.getMessage())
        now = time.monotonic()
        last, dropped = self._seen.get(key, (float("-inf"), 0))
        if now - last < self._every_s:
            self._seen[key] = (last, dropped + 1)
            return False
        if len(self._seen) > 1000:  # bounded: forget everything rather than grow
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar lines left out)"
            record.args = ()
        return True
