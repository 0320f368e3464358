"""Broker trouble is logged at once, then at most once per interval; fatal errors always."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from workers.client_errors import ClientErrorLog


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
