from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from riverrun.producers import (
    Delivery,
    DeliveryError,
    PredictionRefused,
    PredictionTimeout,
    RiverrunClient,
)
from riverrun.schemas import (
    KafkaSettings,
    LabelObserved,
    PredictionMade,
    PredictionRequested,
    TopicSettings,
    decode,
    decode_request,
    encode,
    utc_now,
)
from tests.integration.conftest import wait_for


def read_all(
    kafka: KafkaSettings, topic: str, count: int, deadline_s: float = 30.0
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
            if len(messages) >= count and at_end == set(partitions):
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


class Responder:
    """Test scaffolding standing in for a scorer: answers each request with 2 * features['x']."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings) -> None:
        self.kafka = kafka
        self.topics = topics
        self.stop = threading.Event()
        self.answered = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        consumer = Consumer(
            self.kafka.client_config({"group.id": "unused-responder", "enable.auto.commit": False})
        )
        producer = Producer(self.kafka.client_config({"linger.ms": 0}))
        topic = self.topics.requests
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self.stop.is_set():
                for message in consumer.consume(100, timeout=0.1):
                    if message.error() is not None:
                        continue
                    request = decode_request(message.value())
                    answer = PredictionMade(
                        request_id=request.request_id,
                        model=request.model,
                        version=1,
                        snapshot=0,
                        route="champion",
                        prediction=2 * float(request.features["x"]),
                        features=request.features,
                        scored_at=utc_now(),
                        latency_ms=0.0,
                    )
                    producer.produce(self.topics.predictions, encode(answer), key=message.key())
                    producer.poll(0)
                    self.answered += 1
                producer.flush(5)
        finally:
            producer.flush(5)
            consumer.close()

    def __enter__(self) -> Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def client(kafka_settings: KafkaSettings, topics: TopicSettings) -> Iterator[RiverrunClient]:
    with RiverrunClient(kafka_settings, topics) as c:
        yield c


def test_request_and_feedback_share_key_and_partition(
    client: RiverrunClient, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    sent = {}
    for i in range(8):
        key = f"customer-{i}"
        rid = client.send_request("fraud", {"x": float(i), "country": "fr"}, key=key)
        client.send_feedback("fraud", rid, i % 2 == 0, key=key)
        sent[rid] = key
    implicit = client.send_request("fraud", {"x": 1.0})
    client.send_feedback("fraud", implicit, True)
    sent[implicit] = implicit
    assert client.flush(10) == 0
    assert client.delivered == 18
    assert client.delivery_failures == 0

    requests = read_all(kafka_settings, topics.requests, 9)
    feedback = read_all(kafka_settings, topics.feedback, 9)
    assert len(requests) == 9
    assert len(feedback) == 9
    request_partition = {}
    for message in requests:
        event = decode(PredictionRequested, message.value())
        assert message.key() == sent[event.request_id].encode()
        assert event.model == "fraud"
        assert event.sent_at is not None
        request_partition[event.request_id] = message.partition()
    for message in feedback:
        label = decode(LabelObserved, message.value())
        assert message.key() == sent[label.request_id].encode()
        assert message.partition() == request_partition[label.request_id]
    assert len(set(request_partition.values())) > 1, "keys should spread over partitions"


def test_request_ids_are_uuid_hex_unless_given(client: RiverrunClient) -> None:
    generated = client.send_request("fraud", {"x": 1.0})
    assert len(generated) == 32
    int(generated, 16)
    assert client.send_request("fraud", {"x": 1.0}, request_id="mine-1") == "mine-1"
    client.flush(10)


def free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_delivery_failures_are_counted_reported_and_raised() -> None:
    # Nothing listens on the port, and records give up after a second.
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_closed_port()}",
        extra={"message.timeout.ms": "1000", "socket.connection.setup.timeout.ms": "1000"},
    )
    reports: list[Delivery] = []
    # log_level 0 keeps librdkafka's expected "connection refused" lines out of the output.
    client = RiverrunClient(kafka, on_delivery=reports.append, producer_options={"log_level": 0})
    rid = client.send_request("fraud", {"x": 1.0})
    client.send_feedback("fraud", rid, True)
    with pytest.raises(DeliveryError) as raised:
        client.flush(30)
    error = raised.value
    assert error.total == 2
    assert {f.kind for f in error.failures} == {"request", "feedback"}
    assert all(f.request_id == rid for f in error.failures)
    assert rid in str(error)
    assert "not delivered" in str(error)
    assert client.delivery_failures == 2
    assert len(reports) == 2
    assert not any(r.ok for r in reports)
    # Reported once: a later flush with nothing new in flight does not raise again.
    assert client.flush(1) == 0
    client.close()


def test_predict_returns_the_matching_prediction(
    client: RiverrunClient, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    with Responder(kafka_settings, topics):
        answer = client.predict("fraud", {"x": 21.0}, key="customer-1", timeout=30)
        assert answer.prediction == 42.0
        assert answer.model == "fraud"

        def ask(i: int) -> tuple[int, PredictionMade]:
            return i, client.predict("fraud", {"x": float(i)}, timeout=30)

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(ask, range(64)))
    assert len({a.request_id for _, a in answers}) == 64
    for i, answer in answers:
        assert answer.prediction == 2.0 * i
        assert answer.features["x"] == float(i)


def test_predict_times_out_clearly_when_nobody_answers(
    client: RiverrunClient, topics: TopicSettings
) -> None:
    with pytest.raises(PredictionTimeout) as raised:
        client.predict("fraud", {"x": 1.0}, timeout=1.0)
    error = raised.value
    assert isinstance(error, TimeoutError)
    message = str(error)
    assert "'fraud'" in message
    assert error.request_id in message
    assert topics.predictions in message
    assert "scorer" in message
    assert error.timeout == 1.0


def test_closed_client_refuses_to_send(
    kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    client = RiverrunClient(kafka_settings, topics)
    client.close()
    with pytest.raises(Exception, match="closed"):
        client.send_request("fraud", {"x": 1.0})


def test_close_with_no_broker_raises_and_lists_what_was_not_delivered() -> None:
    # Nothing listens on the port; librdkafka would keep the request for five minutes.
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_closed_port()}")
    client = RiverrunClient(kafka, producer_options={"log_level": 0})
    rid = client.send_request("fraud", {"x": 1.0})
    started = time.monotonic()
    with pytest.raises(DeliveryError) as raised:
        client.close(timeout=2)
    assert time.monotonic() - started < 10
    assert raised.value.total == 1 and raised.value.failures[0].request_id == rid
    assert "not delivered" in str(raised.value)


def test_predict_of_a_dead_lettered_request_fails_at_once_with_its_reason(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
) -> None:
    scorer = start_scorer()
    with RiverrunClient(kafka_settings, topics) as client:
        wait_for(lambda: "assigned" in scorer.output(), 60, "the scorer to join its group")
        started = time.monotonic()
        with pytest.raises(PredictionRefused) as raised:
            client.predict("nobody-serves-this", {"x": 1.0}, timeout=30)
        assert time.monotonic() - started < 5
    assert raised.value.error_class == "UnknownModel"
    assert "nobody-serves-this" in raised.value.reason
