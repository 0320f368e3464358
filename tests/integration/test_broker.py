"""The brokers riverrun starts, through the CLI and the Python API, against real processes."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from riverrun.workers.broker.process import BrokerError, metadata_brokers
from tests.conftest import signal_node

RIVERRUN = [sys.executable, "-m", "riverrun.workers.cli"]
needs_java_and_mvn = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="Apache Kafka needs java and mvn on PATH",
)


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout_s}s")


def produce(bootstrap: str, topic: str, values: list[bytes], timeout_s: float = 30) -> list[bytes]:
    """Produce with acks=all; return the values the cluster acknowledged."""
    acked: list[bytes] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            acked.append(msg.value())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": 20000})
    for value in values:
        producer.produce(topic, value, on_delivery=on_delivery)
        producer.poll(0)
    producer.flush(timeout_s)
    return acked


def read_all(bootstrap: str, topic: str, partitions: int, expected: set[bytes],
             timeout_s: float = 30) -> set[bytes]:
    """Read the topic from its start until every expected value is seen (or the deadline)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    seen: set[bytes] = set()
    try:
        consumer.assign([TopicPartition(topic, p, -2) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while not expected <= seen and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                seen.add(message.value())
    finally:
        consumer.close()
    return seen


def create_topic(bootstrap: str, topic: str, partitions: int, replication: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, replication)])[topic].result(timeout=30)


def leader_or_none(cluster: Any, topic: str, partition: int) -> int | None:
    """The partition's leader, or None while an election leaves it without one."""
    try:
        return int(cluster.leader_of(topic, partition))
    except BrokerError:
        return None


# ---- the CLI ---------------------------------------------------------------------------------


@pytest.mark.smoke
def test_check_cli_measures_read_committed(broker: Any) -> None:
    result = subprocess.run(
        [*RIVERRUN, "broker", "check", "--bootstrap-servers", broker.bootstrap_servers,
         "--compaction-timeout", "3"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The probe ran: its detail counts what a read_committed reader saw.
    assert "read_committed saw" in report["details"]["read_committed"]
    assert report["details"]["persistence"] == "not probed: broker not started by riverrun"
    if broker.engine == "kafka":
        assert report["read_committed"] is True
        assert report["transactions"] is True
    elif broker.engine == "tansu":
        assert report["read_committed"] is False


def test_tansu_cli_prints_bootstrap_and_exits_zero_on_sigterm() -> None:
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen([*RIVERRUN, "broker", "--port", "0"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as process:
        assert process.stdout is not None
        stdout = process.stdout
        reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout],
                                  daemon=True)
        reader.start()
        try:
            line = lines.get(timeout=30)
            match = re.fullmatch(r"bootstrap: (127\.0\.0\.1:\d+)\n", line)
            assert match, line
            assert metadata_brokers(match.group(1), timeout_s=5) == 1
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
            reader.join(timeout=5)
            assert lines.empty()
        finally:
            if process.poll() is None:
                process.kill()


def test_kafka_cli_without_java_says_what_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    result = subprocess.run([*RIVERRUN, "broker", "--engine", "kafka"], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    assert result.returncode != 0
    assert "java is not on PATH" in result.stderr
    assert result.stdout == ""


# ---- Apache Kafka clusters -------------------------------------------------------------------


def test_killed_leader_loses_no_acknowledged_record(kafka_cluster: Any, unique: Any) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = unique("kill-leader")
    create_topic(bootstrap, topic, partitions=3, replication=3)
    acked = produce(bootstrap, topic, [b"before-%d" % i for i in range(300)])
    assert len(acked) == 300

    leader = kafka_cluster.leader_of(topic, 0)
    signal_node(kafka_cluster, leader, signal.SIGKILL)
    wait_for(lambda: leader_or_none(kafka_cluster, topic, 0) not in (None, leader), 30,
             "a new leader")
    # Two of three replicas are left, which meets min.insync.replicas=2: acks=all still works.
    acked += produce(bootstrap, topic, [b"during-%d" % i for i in range(300)])
    assert read_all(bootstrap, topic, 3, set(acked)) >= set(acked)

    kafka_cluster.restart_node(leader)
    acked += produce(bootstrap, topic, [b"after-%d" % i for i in range(300)])
    assert len(acked) == 900
    assert read_all(bootstrap, topic, 3, set(acked)) >= set(acked)


def test_pause_and_resume_node(kafka_cluster: Any, unique: Any) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    topic = unique("pause")
    create_topic(bootstrap, topic, partitions=1, replication=3)
    node = kafka_cluster.nodes[-1]
    signal_node(kafka_cluster, node, signal.SIGSTOP)
    try:
        # A paused node keeps its pid: it is stopped, not gone.
        assert kafka_cluster.node(node).alive()
    finally:
        signal_node(kafka_cluster, node, signal.SIGCONT)
    acked = produce(bootstrap, topic, [b"%d" % i for i in range(50)])
    assert len(acked) == 50


@needs_java_and_mvn
def test_node_restarted_on_its_data_dir_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    from riverrun.workers.broker.kafka import start_kafka

    topic = "persisted"
    with start_kafka(data_dir=tmp_path) as cluster:
        create_topic(cluster.bootstrap_servers, topic, partitions=2, replication=1)
        acked = produce(cluster.bootstrap_servers, topic, [b"%d" % i for i in range(200)])
        assert len(acked) == 200
        cluster.stop_node(0)
        cluster.restart_node(0)
        assert read_all(cluster.bootstrap_servers, topic, 2, set(acked)) >= set(acked)
    # A given data dir outlives the cluster, and a new one on it keeps the log.
    assert (tmp_path / "node-0" / "data" / "meta.properties").is_file()
    with start_kafka(data_dir=tmp_path) as again:
        assert read_all(again.bootstrap_servers, topic, 2, set(acked)) >= set(acked)


@pytest.mark.smoke
@pytest.mark.requires("read_committed")
def test_requires_marker_runs_only_where_the_capability_was_measured(broker: Any) -> None:
    assert broker.capabilities is not None
    assert broker.capabilities.read_committed is True
    assert "read_committed saw 3 committed and 0 aborted" in broker.capabilities.detail(
        "read_committed"
    )
