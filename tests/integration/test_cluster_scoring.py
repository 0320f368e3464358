"""Scoring through a broker failure: a three-node Apache Kafka cluster loses a partition leader."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.broker.topics import create_topics
from tests.conftest import signal_node

from .conftest import ScorerProcess, read_all, request_ids, request_payload, wait_for


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:  # noqa: S310  # loopback
            return response.status == 200
    except OSError:
        return False


def test_killed_leader_mid_stream_every_acknowledged_request_is_scored(
    kafka_cluster: Any, unique: Any, model_file: Path, tmp_path: Path,
    phishing: list[tuple[dict[str, float], bool]], unused_tcp_port: int,
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)
    suffix = unique("cluster")
    topics = TopicSettings(**{role: f"{name}-{suffix}" for role, name in TopicSettings().all().items()})
    create_topics(kafka, topics, partitions=4, replication_factor=3)

    riverrun = str(Path(sys.executable).parent / "riverrun")
    scorer = ScorerProcess(
        [riverrun, "--log-format", "text", "score", "--bootstrap-servers", kafka.bootstrap_servers,
         "--topic-requests", topics.requests, "--topic-predictions", topics.predictions,
         "--topic-dead-letters", topics.dead_letters, "--model-file", str(model_file),
         "--model-name", "phishing", "--group-id", f"scorers-{suffix}", "--worker-id", "c1",
         "--metrics-port", str(unused_tcp_port), "--batch-size", "200"],
        env=dict(os.environ), log=tmp_path / "scorer.log",
    )  # fmt: skip
    try:
        wait_for(lambda: _ready(unused_tcp_port), 90, "the scorer to be ready")
        rows = [x for x, _ in phishing]
        acknowledged: list[str] = []
        failed: list[str] = []
        halfway = threading.Event()

        def send() -> None:
            producer = Producer(kafka.client_config({
                "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                "partitioner": "murmur2_random", "message.timeout.ms": 60_000}))

            def report(err: Any, msg: Any) -> None:
                (failed if err else acknowledged).append(msg.key().decode())

            for i in range(3000):
                key = f"req-{i}"
                producer.produce(topics.requests, request_payload(i, rows[i % len(rows)]),
                                 key.encode(), on_delivery=report)
                producer.poll(0)
                if i == 1000:
                    halfway.set()
                time.sleep(0.003)
            producer.flush(90)

        sender = threading.Thread(target=send)
        sender.start()
        assert halfway.wait(60)
        leader = kafka_cluster.leader_of(topics.requests, 0)
        signal_node(kafka_cluster, leader, signal.SIGKILL)
        time.sleep(3)
        assert scorer.alive(), scorer.output()
        kafka_cluster.restart_node(leader)
        sender.join(120)
        assert not sender.is_alive()

        assert len(acknowledged) >= 2000, f"only {len(acknowledged)} acknowledged, {len(failed)} failed"
        counts = Counter(request_ids(read_all(kafka, topics.predictions, at_least=len(acknowledged),
                                              timeout=120)))
        missing = [key for key in acknowledged if counts[key] == 0]
        assert not missing, f"{len(missing)} acknowledged requests have no prediction"
        assert scorer.alive(), scorer.output()
        wait_for(lambda: _ready(unused_tcp_port), 60, "readiness after the failover")
        duplicates = sum(c - 1 for c in counts.values())
        print(f"\nleader node {leader} killed mid-stream: {len(acknowledged)} acknowledged, "
              f"0 missing, {duplicates} duplicates (at-least-once)")
    finally:
        scorer.close()
    assert "Traceback" not in scorer.output()
