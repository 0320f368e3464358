"""Whether a Kafka client has heard from its brokers lately, read from librdkafka's statistics.

A black-holed connection stays open: librdkafka marks a broker down only when a request times
out (a minute by default), long after the worker stopped making progress. Its statistics count
every response received (`brokers.*.rx`), and a live consumer receives several a second (fetch
answers every `fetch.wait.max.ms`, heartbeats every `heartbeat.interval.ms`), so a count that
stops growing for a few reports is a broker that stopped answering. One silence is expected:
the coordinator holds a JoinGroup or SyncGroup answer until the whole group has rejoined, and a
member without partitions has nothing else in flight, so a report taken while the group waits
on a join counts as contact (the join has its own timeouts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

_JOINING = frozenset({"wait-join", "wait-sync"})


def responses_received(stats: Mapping[str, object]) -> int:
    """Responses received from every broker connection (bootstrap and coordinator included)."""
    brokers = stats.get("brokers")
    if not isinstance(brokers, dict):
        return 0
    total = 0
    for broker in brokers.values():
        rx = broker.get("rx") if isinstance(broker, dict) else None
        if isinstance(rx, int):
            total += rx
    return total


class BrokerContact:
    """Tracks the last statistics report in which the client received a broker response.

    `silence_s` is how long without a response counts as out of contact; it must span a few
    statistics intervals, or a quiet second would read as an outage.
    """

    def __init__(self, silence_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._silence_s = silence_s
        self._clock = clock
        self._responses = -1
        self._heard_at = clock()

    @classmethod
    def for_interval(cls, statistics_interval_ms: int) -> BrokerContact:
        """Out of contact after 2.5 statistics intervals (at least 2 s) without a response."""
        return cls(max(2.0, 2.5 * statistics_interval_ms / 1000.0))

    def observe(self, stats: Mapping[str, object]) -> None:
        """Take in one statistics report."""
        responses = responses_received(stats)
        group = stats.get("cgrp")
        joining = isinstance(group, dict) and group.get("join_state") in _JOINING
        if responses != self._responses or joining:  # a reconnect restarts a count: news too
            self._responses = responses
            self._heard_at = self._clock()

    def in_contact(self, as_of: float | None = None) -> bool:
        """Tell whether a broker answered within `silence_s` seconds before `as_of` (now).

        Reports reach the client only when it polls: a caller busy between polls passes the
        time of its last poll, so that a silence it could not have heard is not an outage.
        """
        return (self._clock() if as_of is None else as_of) - self._heard_at < self._silence_s

    @property
    def silent_for_s(self) -> float:
        """Seconds since the last report with a new response."""
        return self._clock() - self._heard_at


class LagGauge(Protocol):
    """What the listener feeds besides contact: a consumer-lag collector."""

    def update_from_stats(self, stats_json: str | bytes | Mapping[str, Any]) -> None:
        """Take in one parsed statistics report."""
        ...


class StatisticsListener:
    """A consumer's `stats_cb`: one parse feeds its lag gauge and its broker contact.

    The moments contact is lost and found again are logged.
    """

    def __init__(
        self, lag: LagGauge, contact: BrokerContact, bootstrap_servers: str, log: logging.Logger
    ) -> None:
        self.contact = contact
        self._lag = lag
        self._bootstrap_servers = bootstrap_servers
        self._log = log
        self._was_in_contact = True

    def __call__(self, stats_json: str) -> None:
        """Take in one report (called by librdkafka from the poll thread)."""
        try:
            stats = orjson.loads(stats_json)
        except orjson.JSONDecodeError as exc:
            self._log.warning("unreadable librdkafka statistics: %s", exc)
            return
        if not isinstance(stats, dict):
            return
        self._lag.update_from_stats(stats)
        self.contact.observe(stats)
        in_contact = self.contact.in_contact()
        if in_contact == self._was_in_contact:
            return
        self._was_in_contact = in_contact
        if in_contact:
            self._log.info("Kafka at %s answers again", self._bootstrap_servers)
        else:
            self._log.warning("no answer from Kafka at %s for %.1f s: not ready until it answers",
                              self._bootstrap_servers, self.contact.silent_for_s)
