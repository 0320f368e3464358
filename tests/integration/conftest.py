"""Integration fixtures: a trained model file, scorer and judge processes, topic I/O."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from river import datasets, linear_model, optim, preprocessing

from riverrun.schemas import KafkaSettings, PolicyChanged, TopicSettings
from riverrun.workers.broker.process import free_port
from riverrun.workers.registry import Registry, RegistrySettings, read_registry

MODEL_NAME = "phishing"
RIVERRUN = str(Path(sys.executable).parent / "riverrun")


@pytest.fixture(scope="session")
def phishing() -> list[tuple[dict[str, float], bool]]:
    return list(datasets.Phishing())


@pytest.fixture(scope="session")
def trained_model(phishing: list[tuple[dict[str, float], bool]]) -> Any:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.05)
    )
    for x, y in phishing[:500]:
        model.learn_one(x, y)
    return model


@pytest.fixture(scope="session")
def model_file(trained_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / f"{MODEL_NAME}.pkl"
    path.write_bytes(pickle.dumps(trained_model))
    return path


def request_payload(i: int, features: dict[str, Any], model: str = MODEL_NAME) -> bytes:
    return orjson.dumps({"request_id": f"req-{i}", "model": model, "features": features})


def produce(
    kafka: KafkaSettings, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Produce (key, value) pairs idempotently; return each record's (partition, offset)."""
    producer = Producer(kafka.client_config(
        {"enable.idempotence": True, "acks": "all", "linger.ms": 5,
         "partitioner": "murmur2_random", "message.max.bytes": 2_000_000}
    ))
    where: list[tuple[int, int]] = [(-1, -1)] * len(records)

    def report(i: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            assert err is None, f"delivery failed: {err}"
            where[i] = (msg.partition(), msg.offset())
        return on_delivery

    for i, (key, value) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    return where


@dataclass
class Read:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int


def read_all(
    kafka: KafkaSettings,
    topic: str,
    *,
    at_least: int = 0,
    timeout: float = 60.0,
    isolation: str = "read_committed",
    settle: bool = True,
) -> list[Read]:
    """Every record of a topic from the start, waiting until `at_least` arrived or timeout.

    With `settle` (the default) it then waits until the topic has been quiet for a second, so
    that late duplicates are read too. A poll that only counts what is there so far passes
    `settle=False`: it returns as soon as every partition is read to its end.
    """
    consumer = Consumer(kafka.client_config({
        "group.id": "unused-reader", "enable.auto.commit": False,
        "isolation.level": isolation, "fetch.wait.max.ms": 50,
    }))
    try:
        metadata = consumer.list_topics(topic, timeout=15)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[Read] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.2)
            for msg in batch:
                if msg.error() is None:
                    out.append(Read(msg.key(), msg.value(), dict(msg.headers() or []),
                                    msg.partition(), msg.offset()))
            if batch:
                quiet_since = time.monotonic()
            # Done when enough arrived and the topic has been quiet for a moment.
            if len(out) >= at_least and time.monotonic() - quiet_since > 1.0:
                break
            if not settle and not batch and len(out) >= at_least and _read_to_end(consumer):
                break
        return out
    finally:
        consumer.close()


def count_so_far(kafka: KafkaSettings, topic: str, timeout: float = 1.0) -> int:
    """How many records a topic holds now (read committed): a poll for `wait_for`."""
    return len(read_all(kafka, topic, timeout=timeout, settle=False))


def _read_to_end(consumer: Consumer) -> bool:
    """Whether every assigned partition is read up to its end (its high watermark)."""
    for position in consumer.position(consumer.assignment()):
        low, high = consumer.get_watermark_offsets(position, timeout=5, cached=False)
        if high > max(low, position.offset):
            return False
    return True


def one_partition_feedback(
    kafka: KafkaSettings, topics: TopicSettings, unique: Callable[[str], str]
) -> TopicSettings:
    """The same topics with a one-partition feedback topic, so label order is total."""
    name = unique("feedback-1p")
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(name, num_partitions=1)]).values():
        future.result(timeout=30)
    return topics.model_copy(update={"feedback": name})


def request_ids(records: list[Read]) -> list[str]:
    return [orjson.loads(r.value)["request_id"] for r in records if r.value]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ScorerProcess:
    """`riverrun score` as a user runs it, in its own process."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self._log_handle = log.open("ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log_handle,
                                     stderr=subprocess.STDOUT)
        self._terminated = False

    def signal(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            self._terminated = True
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log_handle.closed:
            self._log_handle.flush()
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM, unless this process has already exited or been sent one."""
        if self.alive() and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        if self.alive():
            self.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_handle.close()


def close_all(processes: list[ScorerProcess]) -> None:
    """Stop every process: all are sent SIGTERM first, so that they shut down side by side."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.close()


@pytest.fixture
def start_scorer(
    kafka_settings: KafkaSettings, topics: TopicSettings, model_file: Path, tmp_path: Path
) -> Iterator[Callable[..., ScorerProcess]]:
    """Start `riverrun score` processes on this test's topics; all are stopped at teardown."""
    started: list[ScorerProcess] = []

    def start(*extra: str, group: str = "scorers", worker: str | None = None,
              env: dict[str, str] | None = None, registry: bool = False) -> ScorerProcess:
        """`registry=True` follows the models topic instead of serving the model file."""
        worker = worker or f"w{len(started)}"
        source = (["--topic-models", topics.models, "--topic-artifacts", topics.artifacts]
                  if registry else ["--model-file", str(model_file), "--model-name", MODEL_NAME])
        argv = [
            RIVERRUN, "--log-format", "text", "score",
            "--bootstrap-servers", kafka_settings.bootstrap_servers,
            "--topic-requests", topics.requests, "--topic-predictions", topics.predictions,
            "--topic-dead-letters", topics.dead_letters,
            *source,
            "--group-id", f"{group}-{topics.requests}", "--worker-id", worker,
            "--batch-size", "200", *extra,
        ]  # fmt: skip
        process_env = {**os.environ, **(env or {})}
        process = ScorerProcess(argv, process_env, tmp_path / f"scorer-{worker}-{len(started)}.log")
        started.append(process)
        return process

    yield start
    close_all(started)


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Judge:
    """`riverrun judge` as an operator runs it, and its HTTP state."""

    def __init__(self, process: ScorerProcess, port: int) -> None:
        self.process = process
        self.port = port

    def state(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/state", timeout=2) as r:  # noqa: S310  # loopback
                return orjson.loads(r.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    def ready_state(self) -> dict[str, Any]:
        wait_for(lambda: (self.state() or {}).get("ready") is True, 90, "the judge to be ready")
        state = self.state()
        assert state is not None
        return state


@pytest.fixture
def start_judge(
    kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path,
    unique: Callable[[str], str],
) -> Iterator[Callable[..., Judge]]:
    started: list[ScorerProcess] = []
    app_id = unique("judge")

    def start(*extra: str) -> Judge:
        port = free_port()
        names = [arg for role, name in topics.all().items()
                 for arg in (f"--topic-{role.replace('_', '-')}", name)]
        argv = [RIVERRUN, "--log-format", "text", "judge",
                "--bootstrap-servers", kafka_settings.bootstrap_servers, *names,
                "--app-id", app_id, "--http-port", str(port), "--decide-interval-s", "0.2",
                "--batch-within-s", "0.1", "--data-dir", str(tmp_path / "judge-data"),
                "--seed", "1", "--insecure-dev", *extra]  # fmt: skip
        process = ScorerProcess(argv, {}, tmp_path / f"judge-{len(started)}.log")
        started.append(process)
        return Judge(process, port)

    yield start
    close_all(started)


def publish(kafka: KafkaSettings, topics: TopicSettings, policy: PolicyChanged) -> None:
    with Registry(kafka, topics, RegistrySettings(insecure_dev=True)) as registry:
        registry.publish_policy(policy)


def judge_decisions(kafka: KafkaSettings, topics: TopicSettings) -> list[PolicyChanged]:
    return [r for r in read_registry(kafka, topics.models, timeout=5)
            if isinstance(r, PolicyChanged) and r.decided_by == "judge"]


