"""Broker trouble is logged at once, then at most once per interval; fatal errors always;
librdkafka's repeated log lines are thinned and say how many were left out."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from riverrun.workers.runtime.kafka import ClientErrorLog
from riverrun.workers.runtime.logfmt import RepeatedLines


def test_transport_errors_are_throttled_and_fatal_ones_are_not(caplog: pytest.LogCaptureFixture) -> None:
    log = ClientErrorLog(logging.getLogger("test.client"), "127.0.0.1:9092", every_s=3600)
    transport = KafkaError(KafkaError._TRANSPORT)
    fatal = KafkaError(KafkaError._FENCED, fatal=True)
    with caplog.at_level(logging.WARNING, logger="test.client"):
        for _ in range(5):
            log(transport)
        log(fatal)
        log(fatal)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(warnings) == 1 and "still trying 127.0.0.1:9092" in warnings[0].getMessage()
    assert len(errors) == 2


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, message, None, None)


def test_a_line_repeated_within_the_interval_is_left_out_then_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("riverrun.workers.runtime.kafka.time.monotonic", lambda: now[0])
    lines = RepeatedLines(every_s=30.0)
    refused = "FAIL 127.0.0.1:{}/bootstrap: Connect failed: Connection refused (after {}ms)"
    assert lines.filter(record(refused.format(9092, 0)))
    for ms in range(1, 6):  # the same line with other numbers in it
        now[0] += 1.0
        assert not lines.filter(record(refused.format(9092, ms)))
    assert lines.filter(record("another line"))
    now[0] += 30.0
    later = record(refused.format(9092, 7))
    assert lines.filter(later)
    assert later.getMessage().endswith("(5 similar lines left out)")
