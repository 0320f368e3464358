from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from riverrun.producers.metrics import ReplayMetrics
from riverrun.producers.replay import (
    ReplayOptions,
    ReplaySettings,
    feedback_mask,
    replay,
    request_id_for,
)
from riverrun.schemas import (
    KafkaSettings,
    LabelObserved,
    PredictionRequested,
    TopicSettings,
    decode,
)


def read_all(
    kafka: KafkaSettings, topic: str, count: int, deadline_s: float = 30.0, to_end: bool = True
) -> list[Message]:
    """Every record of `topic`: read until at least `count` arrived and every partition is at
    its end, so a record beyond `count` (a duplicate) is caught too; or until the deadline."""
    consumer = Consumer(
        kafka.client_config(
            {
                "group.id": "unused-test-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if len(messages) >= count and (not to_end or at_end == set(partitions)):
                break
            for message in consumer.consume(500, timeout=0.5):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    at_end.add(message.partition())
                    continue
                at_end.discard(message.partition())
                messages.append(message)
        return messages
    finally:
        consumer.close()


def index_of(request_id: str) -> int:
    return int(request_id.rsplit("-", 1)[1])


@pytest.mark.smoke
def test_replay_cli_lands_requests_and_a_seeded_share_of_delayed_feedback(
    kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    riverrun = Path(sys.executable).parent / "riverrun"
    result = subprocess.run(
        [
            str(riverrun), "--log-level", "WARNING", "replay",
            "--dataset", "phishing", "--model", "phish", "--rate", "0", "--limit", "300",
            "--feedback-delay", "0.5", "--label-fraction", "0.5", "--seed", "7", "--no-progress",
            "--bootstrap-servers", kafka_settings.bootstrap_servers,
            "--topic-requests", topics.requests, "--topic-feedback", topics.feedback,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("RIVERRUN_")},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["requests"] == 300
    assert summary["delivery_failures"] == 0
    assert summary["stopped_early"] is False
    assert summary["feedback_dropped"] == 0
    assert 100 < summary["feedback"] < 200

    requests = read_all(kafka_settings, topics.requests, 300)
    assert len(requests) == 300
    feedback = read_all(kafka_settings, topics.feedback, summary["feedback"])
    assert len(feedback) == summary["feedback"]

    request_ids = set()
    partition_of = {}
    for message in requests:
        event = decode(PredictionRequested, message.value())
        assert event.model == "phish"
        assert message.key() == event.request_id.encode()
        request_ids.add(event.request_id)
        partition_of[event.request_id] = message.partition()
    assert request_ids == {request_id_for("phishing", 7, i) for i in range(300)}

    labelled: dict[int, list[int]] = defaultdict(list)
    feedback_ids = set()
    for message in feedback:
        label = decode(LabelObserved, message.value())
        assert label.request_id in request_ids
        assert message.partition() == partition_of[label.request_id]
        feedback_ids.add(label.request_id)
        labelled[message.partition()].append(index_of(label.request_id))
    expected = {
        request_id_for("phishing", 7, i)
        for i, chosen in zip(range(300), feedback_mask(7, 0.5), strict=False)
        if chosen
    }
    assert feedback_ids == expected
    for indexes in labelled.values():
        assert indexes == sorted(indexes), "feedback goes out in the order requests were sent"


def test_replay_in_process_stops_early_and_flushes(
    kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    settings = ReplaySettings(
        kafka=kafka_settings,
        topics=topics,
        replay=ReplayOptions(
            dataset="sea-drift", rate=0, limit=1000, feedback_delay=60.0, progress=False
        ),
    )
    stop = threading.Event()

    def stop_at_50(sent: int) -> None:
        if sent == 50:
            stop.set()

    metrics = ReplayMetrics()
    summary = replay(settings, stop, on_sent=stop_at_50, metrics=metrics)
    sample = metrics.registry.get_sample_value
    assert sample("riverrun_replay_requests_sent_total", {"dataset": "sea-drift"}) == 50
    assert sample("riverrun_replay_feedback_waiting", {"dataset": "sea-drift"}) in (None, 0.0)
    assert sample("riverrun_replay_delivery_failures", {"dataset": "sea-drift"}) == 0
    assert summary.stopped_early
    assert summary.requests == 50
    assert summary.feedback == 0
    assert summary.feedback_dropped == 50
    assert summary.delivery_failures == 0
    assert summary.model == "sea-drift"
    assert len(read_all(kafka_settings, topics.requests, 50)) == 50


def test_replay_sends_features_with_labels_when_asked(
    kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    settings = ReplaySettings(
        kafka=kafka_settings,
        topics=topics,
        replay=ReplayOptions(
            dataset="bananas", model="banana", rate=0, limit=20, feedback_delay=0.0,
            feedback_features=True, progress=False,
        ),
    )
    summary = replay(settings)
    assert (summary.requests, summary.feedback) == (20, 20)
    records = read_all(kafka_settings, topics.feedback, 20)
    labels = [decode(LabelObserved, m.value()) for m in records]
    assert len(labels) == 20
    assert all(label.features is not None and set(label.features) == {"1", "2"} for label in labels)
    assert {label.request_id for label in labels} == {
        request_id_for("bananas", 42, i) for i in range(20)
    }
    assert list(itertools.islice(feedback_mask(42, 1.0), 20)) == [True] * 20


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_replay_cli_stops_on_a_signal_flushes_and_exits_0(
    kafka_settings: KafkaSettings, topics: TopicSettings, signum: signal.Signals
) -> None:
    riverrun = Path(sys.executable).parent / "riverrun"
    process = subprocess.Popen(
        [
            str(riverrun), "--log-level", "WARNING", "replay",
            "--dataset", "sea", "--rate", "50", "--limit", "100000", "--feedback-delay", "3600",
            "--no-progress", "--bootstrap-servers", kafka_settings.bootstrap_servers,
            "--topic-requests", topics.requests, "--topic-feedback", topics.feedback,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RIVERRUN_")},
    )
    try:
        # Running for real: some requests are already on the topic.
        assert len(read_all(kafka_settings, topics.requests, 5, to_end=False)) >= 5
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped_early"] is True
    assert 5 <= summary["requests"] < 100000
    assert summary["feedback"] == 0
    assert summary["feedback_dropped"] == summary["requests"]
    assert summary["delivery_failures"] == 0
    landed = read_all(kafka_settings, topics.requests, summary["requests"])
    assert len(landed) == summary["requests"]
