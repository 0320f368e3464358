"""`riverrun bench --freshness`: from a label produced to the first prediction that learned it.

A real scorer and a real learner run as their own processes at their default cadence. Requests
and labelled feedback (features included) flow at a fixed rate; a reader notes when each
snapshot first answers. A label's freshness is the time from its feedback being produced to
the first prediction served by the first snapshot whose lineage covers its example. Beside it,
the learner's own speed: examples per second through the whole learner (join, log, learn)
against River's bare `learn_one` loop on the same rows.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import BaseModel, Field
from river import linear_model, preprocessing

from riverrun.schemas import (
    KafkaSettings,
    LabelObserved,
    PredictionRequested,
    TopicSettings,
    encode,
)
from riverrun.workers.broker.process import free_port
from riverrun.workers.broker.topics import create_topics
from riverrun.workers.learner.prequential import Prequential, learn_example
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings

MODEL = "fresh"
SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression", task="binary", label_type="bool")


class FreshnessResult(BaseModel):
    """What `riverrun bench --freshness --json` prints."""

    broker: str
    learner_stage: str = Field(
        description="`both`: one learner process; `split`: a join and a learn process."
    )
    rate_per_s: float
    labels: int = Field(description="Labels sent.")
    labels_measured: int = Field(description="Labels whose learning reached a served snapshot.")
    snapshots_served: int
    freshness_p50_s: float
    freshness_p99_s: float
    learner_examples_per_s: float = Field(
        description="Whole learner (join, log, learn) with a backlog ready: examples per second "
        "between a tenth and nine tenths of it learned (split: the learn process's)."
    )
    river_learn_one_per_s: float = Field(description="River's learn_one loop on the same rows.")
    learner_to_river_ratio: float = Field(description="learner / River's bare learn_one loop.")
    river_predict_then_learn_per_s: float = Field(
        description="River's predict_proba_one then learn_one per example, no metric, no Kafka."
    )
    test_then_train_ceiling_ratio: float = Field(
        description="River's predict-then-learn loop / its bare learn_one loop: the most any "
        "learner that predicts each example before learning it can reach."
    )
    river_test_then_train_per_s: float = Field(
        description="River doing what the learner does per example, without Kafka: predict, "
        "update the prequential metrics (the learner's own), learn_one (progressive validation)."
    )
    learner_to_test_then_train_ratio: float = Field(
        description="learner / River's test-then-train loop: the cost of Kafka, the join and "
        "the exactly-once log."
    )


def _riverrun(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", "riverrun.workers.cli", "--log-format", "text", *argv],
                            stdout=handle, stderr=subprocess.STDOUT, env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # loopback only
            return str(response.read().decode())
    except OSError:
        return ""


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _rows(n: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    from river.datasets import synth

    return [({k: float(v) for k, v in x.items()}, bool(y))
            for x, y in synth.Agrawal(seed=seed).take(n)]


def _river_rate(rows: list[tuple[dict[str, float], bool]]) -> float:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    started = time.perf_counter()
    for x, y in rows:
        model.learn_one(x, y)
    return len(rows) / (time.perf_counter() - started)


def _river_predict_then_learn_rate(rows: list[tuple[dict[str, float], bool]]) -> float:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    started = time.perf_counter()
    for x, y in rows:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    return len(rows) / (time.perf_counter() - started)


def _river_test_then_train_rate(rows: list[tuple[dict[str, float], bool]]) -> float:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    prequential = Prequential("binary")
    started = time.perf_counter()
    for x, y in rows:
        learn_example(model, x, y, prequential, True)
    return len(rows) / (time.perf_counter() - started)


def _river_rates(rows: list[tuple[dict[str, float], bool]]) -> tuple[float, float, float]:
    """Return bare learn_one, predict-then-learn and test-then-train rates.

    Each is the best of 3 interleaved rounds, so a neighbour's burst of CPU (the stack winding
    down) cannot skew their ratios.
    """
    # Each loop is written out in full: a per-example callback would tax the bare loop most.
    loops = (_river_rate, _river_predict_then_learn_rate, _river_test_then_train_rate)
    best = [0.0, 0.0, 0.0]
    for _round in range(3):
        for i, loop in enumerate(loops):
            best[i] = max(best[i], loop(rows))
    return best[0], best[1], best[2]


@contextlib.contextmanager
def _stack(
    kafka: KafkaSettings, topics: TopicSettings, workdir: Path, *, split: bool
) -> Iterator[dict[str, Any]]:
    key = secrets.token_hex(16)
    env = {**os.environ, "RIVERRUN_REGISTRY__SIGNING_KEY": key,
           "RIVERRUN_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           **{f"RIVERRUN_TOPICS__{role.upper()}": name for role, name in topics.all().items()}}
    registry = Registry(kafka, topics, RegistrySettings(signing_key=key))
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in _rows(500, seed=3):
        model.learn_one(x, y)
    registry.release(MODEL, SPEC, model)
    scorer_port, learner_port = free_port(), free_port()
    ports = {"the scorer": scorer_port, "the learner": learner_port}
    processes = [_riverrun(["score", "--metrics-port", str(scorer_port), "--worker-id", "fresh-s",
                            "--group-id", f"fresh-{uuid.uuid4().hex[:6]}"], env,
                           workdir / "scorer.log")]  # fmt: skip
    learner = ["learn", "--model", MODEL, "--worker-id", "fresh-l"]
    if split:
        ports["the join stage"] = free_port()
        processes.append(_riverrun([*learner, "--stage", "join", "--metrics-port",
                                    str(ports["the join stage"])], env, workdir / "join.log"))
        learner += ["--stage", "learn"]
    processes.append(_riverrun([*learner, "--metrics-port", str(learner_port)], env,
                               workdir / "learner.log"))  # fmt: skip
    try:
        for what, port in ports.items():
            _wait(lambda port=port: _get(f"http://127.0.0.1:{port}/readyz").startswith("ready"),
                  90, what)  # fmt: skip
        yield {"registry": registry, "learner_port": learner_port}
    finally:
        for process in processes:
            _stop(process)
        registry.close()


def _rate_between(port: int, before: float, backlog: int, low: float, high: float) -> float:
    """Examples learned per second while the backlog goes from fraction `low` to `high` learned.

    Sampled every 250 ms (each sample is a /metrics scrape the learner serves, so scraping more
    often slows what is measured); the rate is the examples counted between the first sample
    past `low` and the first past `high`, over the time between them. A backlog that passes
    both within one sample is counted from the last sample below `low` instead.
    """
    start: tuple[float, float] | None = None
    below = (time.perf_counter(), _learned_total(port) - before)
    deadline = time.monotonic() + 300
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after 300s waiting for the learner to learn the backlog")
        learned = _learned_total(port) - before
        now = time.perf_counter()
        if learned >= high * backlog:
            first_at, first_learned = start if start is not None else below
            return (learned - first_learned) / max(now - first_at, 1e-9)
        if learned < low * backlog:
            below = (now, learned)
        elif start is None:
            start = (now, learned)
        time.sleep(0.25)


def _learned_total(port: int) -> float:
    for line in _get(f"http://127.0.0.1:{port}/metrics").splitlines():
        if line.startswith("riverrun_learner_examples_learned_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def measure_freshness(
    kafka: KafkaSettings, broker: str, rate: float, seconds: float, backlog: int, workdir: Path,
    *, split: bool = False,
) -> FreshnessResult:
    """Run the stack, stream labels at `rate` for `seconds`, then a backlog for the speed.

    With `split`, the learner runs as a join process and a learn process (the learn process's
    speed is the learner's).
    """
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(**{r: f"fresh-{n}-{suffix}" for r, n in TopicSettings().all().items()})
    create_topics(kafka, topics, partitions=4)
    n = int(rate * seconds)
    rows = _rows(n + backlog, seed=5)
    sent_at: dict[str, float] = {}
    first_served: dict[int, float] = {}
    done = threading.Event()

    def read() -> None:
        consumer = Consumer(kafka.client_config({"group.id": "fresh-reader",
                                                 "enable.auto.commit": False}))
        parts = consumer.list_topics(topics.predictions, timeout=10).topics[topics.predictions]
        consumer.assign([TopicPartition(topics.predictions, p, 0) for p in parts.partitions])
        while not done.is_set():
            record = consumer.poll(0.1)
            if record is None or record.error() is not None:
                continue
            made = orjson.loads(record.value())
            first_served.setdefault(made["snapshot"], time.time())
        consumer.close()

    with _stack(kafka, topics, workdir, split=split) as stack:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        producer = Producer(kafka.client_config({"enable.idempotence": True, "linger.ms": 1,
                                                 "partitioner": "murmur2_random"}))
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for i, (x, y) in enumerate(rows[:n]):
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += interval
            request_id = f"f-{i}"
            key = request_id.encode()
            producer.produce(topics.requests, encode(PredictionRequested(
                request_id=request_id, model=MODEL, features=x)), key)
            sent_at[request_id] = time.time()
            producer.produce(topics.feedback, encode(LabelObserved(
                request_id=request_id, model=MODEL, label=y, features=x)), key)
            producer.poll(0)
        producer.flush(30)
        time.sleep(3.0)  # the last labels' snapshot reaches the scorer
        # The learner's own speed: a backlog of labels, counted from its metrics between a
        # tenth and nine tenths of it learned. The labels are rendered beforehand, so that
        # producing them does not set the pace, and the first ones wait out the join's settle
        # before the count starts.
        backlog_payloads = [
            (encode(LabelObserved(request_id=f"b-{i}", model=MODEL, label=y, features=x)),
             f"b-{i}".encode())
            for i, (x, y) in enumerate(rows[n:])
        ]  # fmt: skip
        before = _learned_total(stack["learner_port"])
        for value, key in backlog_payloads:
            while True:
                try:
                    producer.produce(topics.feedback, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(30)
        learner_rate = _rate_between(stack["learner_port"], before, backlog, 0.1, 0.9)
        done.set()
        reader.join(5)
        snapshots = stack["registry"].refresh().snapshots(MODEL, 1)

    offsets = _example_offsets(kafka, topics.examples)
    lineage = f"{topics.examples}:0"
    covered = sorted((s.lineage.get(lineage, 0), s.snapshot) for s in snapshots if s.snapshot > 0)
    freshness: list[float] = []
    for request_id, produced in sent_at.items():
        offset = offsets.get(request_id)
        if offset is None:
            continue
        first = next((snap for upto, snap in covered if upto > offset), None)
        if first is not None and first in first_served:
            freshness.append(first_served[first] - produced)
    freshness.sort()
    river_rate, predict_then_learn_rate, test_then_train_rate = _river_rates(rows[n:])

    def q(p: float) -> float:
        if not freshness:
            return 0.0
        return round(freshness[min(len(freshness) - 1, int(p * len(freshness)))], 3)

    return FreshnessResult(
        broker=broker, learner_stage="split" if split else "both", rate_per_s=rate, labels=n,
        labels_measured=len(freshness),
        snapshots_served=len([s for s in first_served if s > 0]),
        freshness_p50_s=q(0.5), freshness_p99_s=q(0.99),
        learner_examples_per_s=round(learner_rate, 1), river_learn_one_per_s=round(river_rate, 1),
        learner_to_river_ratio=round(learner_rate / river_rate, 3),
        river_predict_then_learn_per_s=round(predict_then_learn_rate, 1),
        test_then_train_ceiling_ratio=round(predict_then_learn_rate / river_rate, 3),
        river_test_then_train_per_s=round(test_then_train_rate, 1),
        learner_to_test_then_train_ratio=round(learner_rate / test_then_train_rate, 3),
    )


def _example_offsets(kafka: KafkaSettings, topic: str) -> dict[str, int]:
    consumer = Consumer(kafka.client_config({"group.id": "fresh-examples",
                                             "enable.auto.commit": False,
                                             "isolation.level": "read_committed"}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: dict[str, int] = {}
    quiet = time.monotonic()
    while time.monotonic() - quiet < 2.0:
        for record in consumer.consume(1000, 0.5):
            if record.error() is None:
                out[orjson.loads(record.value())["request_id"]] = record.offset()
                quiet = time.monotonic()
    consumer.close()
    return out
