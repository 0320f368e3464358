"""`riverrun bench --models N`: many distinct models against a small model cache.

N models are published to the registry (version 1 each, the same trained pipeline under N
names), then requests naming them in turn are scored by a `riverrun score` process with
`--model-cache-size K`: every request past the first K is a cache miss, a fetch and a verified
load. Reported: the requests answered per second (predictions and dead letters alike, since a
request beyond a batch's first-load wait is dead-lettered as `ModelLoading`), how many of each,
and whether `/readyz` answered 200 at every sample taken during the run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from pydantic import BaseModel, Field

from riverrun.schemas import (
    DeadLetter,
    KafkaSettings,
    ModelVersionReleased,
    Signature,
    SnapshotPublished,
    TopicSettings,
    encode,
)
from riverrun.workers.broker.process import free_port
from riverrun.workers.broker.topics import create_topics
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings
from riverrun.workers.registry.client import record_headers
from riverrun.workers.registry.loading import seal, snapshot_subject
from riverrun.workers.registry.records import key_of
from riverrun.workers.runtime.kafka import produce

SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression", task="binary", label_type="bool")


class ManyModelsResult(BaseModel):
    """What `riverrun bench --models N --json` prints."""

    broker: str
    models: int
    model_cache_size: int
    requests: int
    answered_per_s: float = Field(description="Predictions and dead letters per second.")
    predictions: int
    dead_letters: dict[str, int] = Field(description="Dead letters by error class.")
    readiness_samples: int
    ready_throughout: bool = Field(description="Every /readyz sample during the run was 200.")


def publish_models(
    kafka: KafkaSettings, topics: TopicSettings, settings: RegistrySettings, names: list[str],
    estimator: Any,
) -> None:
    """Version 1 of each name with its snapshot 0, one estimator's bytes under every name.

    Written straight to the models topic (not one release transaction each): the names are
    new, and a thousand releases would each read the whole registry first.
    """
    registry = Registry(kafka, topics, settings)
    signer = settings.signer()
    data = registry.dump(estimator)
    producer = Producer(kafka.client_config({"enable.idempotence": True, "acks": "all",
                                             "linger.ms": 5}))  # fmt: skip
    for name in names:
        location = registry.store.put(name, 1, 0, data)
        released = ModelVersionReleased(
            model=name, version=1, spec=SPEC.model_dump(mode="json"), task=SPEC.task,
            signature=Signature(label_type="bool"),
        )  # fmt: skip
        snapshot = SnapshotPublished(
            model=name, version=1, snapshot=0,
            artifact=seal(data, signer, location, snapshot_subject(name, 1, 0)),
        )  # fmt: skip
        for record in (released, snapshot):
            key, value = key_of(record), encode(record)
            produce(producer, topics.models, value, key, headers=record_headers(signer, key, value))
    producer.flush(60)
    registry.close()


def _ready(port: int) -> bool | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:  # noqa: S310  # loopback
            return bool(answer.status == 200)
    except urllib.error.HTTPError:
        return False
    except OSError:
        return None  # not listening yet


def measure_many_models(
    kafka: KafkaSettings, broker: str, models: int, cache: int, requests: int,
    rows: list[dict[str, float]], estimator: Any,
) -> ManyModelsResult:
    """Publish `models` models, score `requests` naming them in turn, sample readiness."""
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(**{r: f"bench-{n}-{suffix}" for r, n in TopicSettings().all().items()})
    create_topics(kafka, topics, partitions=4)
    key = secrets.token_hex(32)
    settings = RegistrySettings(signing_key=key)  # type: ignore[arg-type]  # str -> SecretStr
    names = [f"m{i:05d}" for i in range(models)]
    publish_models(kafka, topics, settings, names, estimator)
    port = free_port()
    command = [
        sys.executable, "-m", "riverrun.workers.cli", "--log-level", "WARNING", "score",
        "--bootstrap-servers", kafka.bootstrap_servers,
        *[arg for role, name in topics.all().items()
          for arg in (f"--topic-{role.replace('_', '-')}", name)],
        "--group-id", f"bench-models-{suffix}", "--worker-id", "bench-models",
        "--model-cache-size", str(cache), "--metrics-port", str(port),
    ]  # fmt: skip
    scorer = subprocess.Popen(command, env={**os.environ, "RIVERRUN_REGISTRY__SIGNING_KEY": key})
    samples: list[bool] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            state = _ready(port)
            if state is not None:
                samples.append(state)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        deadline = time.monotonic() + 120
        while _ready(port) is not True:
            if time.monotonic() > deadline or scorer.poll() is not None:
                raise RuntimeError("the scorer did not become ready within 120 s")
            time.sleep(0.2)
        sampler.start()
        producer = Producer(kafka.client_config({"linger.ms": 5, "acks": "all"}))
        started = time.perf_counter()
        for i in range(requests):
            payload = orjson.dumps({"request_id": f"r{i}", "model": names[i % models],
                                    "features": rows[i % len(rows)]})  # fmt: skip
            produce(producer, topics.requests, payload, f"r{i}".encode())
        producer.flush(60)
        predictions, letters, last = _count_answers(kafka, topics, requests)
        elapsed = max(last - started, 1e-9)
    finally:
        done.set()
        scorer.terminate()
        try:
            scorer.wait(30)
        except subprocess.TimeoutExpired:
            scorer.kill()
    return ManyModelsResult(
        broker=broker, models=models, model_cache_size=cache, requests=requests,
        answered_per_s=round((predictions + sum(letters.values())) / elapsed, 1),
        predictions=predictions, dead_letters=dict(letters), readiness_samples=len(samples),
        ready_throughout=bool(samples) and all(samples),
    )  # fmt: skip


def _count_answers(
    kafka: KafkaSettings, topics: TopicSettings, expected: int, timeout: float = 600.0
) -> tuple[int, Counter[str], float]:
    """Read predictions and dead letters until every request is answered; the last one's time."""
    reader = Consumer(kafka.client_config({
        "group.id": f"bench-models-reader-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }))  # fmt: skip
    reader.subscribe([topics.predictions, topics.dead_letters])
    predictions, letters = 0, Counter[str]()
    last = time.perf_counter()
    deadline = time.monotonic() + timeout
    try:
        while predictions + sum(letters.values()) < expected and time.monotonic() < deadline:
            for record in reader.consume(1000, 0.5):
                if record.error() is not None:
                    continue
                last = time.perf_counter()
                if record.topic() == topics.predictions:
                    predictions += 1
                else:
                    letter = DeadLetter.from_headers(list(record.headers() or []))
                    letters[letter.error_class] += 1
    finally:
        reader.close()
    return predictions, letters, last
