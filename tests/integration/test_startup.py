"""A worker's wait for Kafka at start: the broker there and its topics too, or a missing topic
named by its setting once the grace is over; a stop request ends the wait."""

from __future__ import annotations

import threading

import pytest

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.runtime.errors import ConfigurationError
from riverrun.workers.runtime.startup import wait_for_kafka


def test_the_wait_ends_at_once_when_the_broker_and_its_topics_are_there(
    kafka_settings: KafkaSettings, topics: TopicSettings,
) -> None:
    wanted = [("models", topics.models), ("examples", topics.examples)]
    assert wait_for_kafka(kafka_settings, wanted, threading.Event(), "a test")


def test_a_topic_still_missing_after_the_grace_names_its_setting(
    kafka_settings: KafkaSettings, topics: TopicSettings,
) -> None:
    wanted = [("models", topics.models), ("outcomes", f"{topics.outcomes}-never-created")]
    with pytest.raises(ConfigurationError, match="RIVERRUN_TOPICS__OUTCOMES"):
        wait_for_kafka(kafka_settings, wanted, threading.Event(), "a test", topic_grace_s=1.5)


def test_a_stop_request_ends_the_wait(kafka_settings: KafkaSettings, topics: TopicSettings) -> None:
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    wanted = [("models", f"{topics.models}-never-created")]
    assert not wait_for_kafka(kafka_settings, wanted, stop, "a test", topic_grace_s=60.0)
