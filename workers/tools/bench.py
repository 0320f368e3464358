"""`riverrun bench`: the scorer's speed as a ratio to the pipe's own limit, measured in one run.

River and the scorer are imported when a measurement runs, so that the parser stays quick.

Four figures over the same broker and the same data: the raw consume-and-produce limit (bytes
untouched), the model's own `predict_proba_one` rate with no Kafka, the real scorer end to end,
and end-to-end latency percentiles under a fixed offered load.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from pydantic import BaseModel, Field

from riverrun.schemas import KafkaSettings, TopicSettings, add_section_flags, collect_section_flags
from riverrun.workers.broker.topics import create_topics
from riverrun.workers.runtime.kafka import produce
from riverrun.workers.scorer.settings import ScorerOptions, ScorerSettings

logger = logging.getLogger(__name__)

MODEL_NAME = "bench"
TRAIN_ROWS = 5_000


class BenchResult(BaseModel):
    """What `riverrun bench --json` prints."""

    messages: int
    broker: str
    model: str
    limit_msgs_per_s: float = Field(description="Raw consume-and-produce loop, bytes untouched.")
    model_msgs_per_s: float = Field(description="River's predict_proba_one loop, no Kafka.")
    scorer_msgs_per_s: float = Field(description="The real scorer, decode to acknowledged output.")
    ratio_to_limit: float = Field(description="scorer_msgs_per_s / limit_msgs_per_s.")
    fast_path_msgs_per_s: float | None = Field(
        default=None, description="The vectorised scorer's rate over the same rows, no Kafka."
    )
    latency_rate_per_s: float
    latency_messages: int
    latency_p50_ms: float
    latency_p99_ms: float


def _rows(n: int, seed: int = 7) -> list[dict[str, float]]:
    from river.datasets import synth

    return [
        {k: float(v) for k, v in x.items()} for x, _ in synth.Agrawal(seed=seed).take(n)
    ]


def _trained_model() -> Any:
    from river import linear_model, preprocessing
    from river.datasets import synth

    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in synth.Agrawal(seed=1).take(TRAIN_ROWS):
        model.learn_one({k: float(v) for k, v in x.items()}, y)
    return model


def _payloads(rows: list[dict[str, float]], prefix: str) -> list[bytes]:
    return [
        orjson.dumps({"request_id": f"{prefix}-{i}", "model": MODEL_NAME, "features": row})
        for i, row in enumerate(rows)
    ]


def _producer_config(kafka: KafkaSettings) -> dict[str, Any]:
    # The same durability as the scorer's producer, so the limit is a fair one.
    return kafka.client_config(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "batch.num.messages": 10_000,
            "partitioner": "murmur2_random",
        }
    )


def _load(kafka: KafkaSettings, topic: str, payloads: list[bytes], prefix: str) -> None:
    producer = Producer(_producer_config(kafka))
    for i, payload in enumerate(payloads):
        produce(producer, topic, payload, f"{prefix}-{i}".encode())
    producer.flush(60)


def measure_limit(kafka: KafkaSettings, source: str, sink: str, n: int, batch: int) -> float:
    """A consume-and-produce loop that copies bytes untouched: the pipe's own limit.

    Written out by hand, with no riverrun code in it: it is what the scorer is measured against.
    """
    consumer = Consumer(
        kafka.client_config(
            {
                "group.id": f"bench-limit-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.offset.store": False,
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.wait.max.ms": 100,
            }
        )
    )
    producer = Producer(_producer_config(kafka))
    consumer.subscribe([source])
    seen = 0
    started: float | None = None
    try:
        while seen < n:
            records = consumer.consume(min(batch, n - seen), 1.0)
            if not records:
                continue
            if started is None:
                started = time.perf_counter()
            for record in records:
                if record.error() is None:
                    while True:
                        try:
                            producer.produce(sink, record.value(), record.key())
                            break
                        except BufferError:
                            producer.poll(0.05)
                    seen += 1
            producer.poll(0)
        producer.flush(60)
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        consumer.close()
    return n / elapsed if elapsed > 0 else 0.0


def measure_model(model: Any, rows: list[dict[str, float]]) -> float:
    """River's own `predict_proba_one` loop over the rows, no Kafka."""
    started = time.perf_counter()
    for row in rows:
        model.predict_proba_one(row)
    return len(rows) / (time.perf_counter() - started)


def measure_fast_path(model: Any, rows: list[dict[str, float]], batch: int) -> float | None:
    """The vectorised scorer over the same rows in batches, no Kafka."""
    from riverrun.workers.scorer.model import linear_fast_path

    fast = linear_fast_path(model)
    if fast is None:
        return None
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        fast.predict_many(rows[i : i + batch])
    return len(rows) / (time.perf_counter() - started)


def measure_scorer(
    kafka: KafkaSettings, topics: TopicSettings, model_file: Path, n: int, batch: int
) -> float:
    """The real scorer, in this process, from its first record to its last acknowledged output."""
    settings = ScorerSettings(
        kafka=kafka,
        topics=topics,
        scorer=ScorerOptions(
            model_file=model_file,
            model_name=MODEL_NAME,
            group_id=f"bench-scorer-{uuid.uuid4().hex[:8]}",
            worker_id="bench",
            batch_size=batch,
        ),
    )
    from riverrun.workers.scorer.loop import Scorer
    from riverrun.workers.scorer.model import FileModelSource, load_model_file

    source = FileModelSource(load_model_file(model_file, MODEL_NAME))
    summary = Scorer(settings, source).run(max_messages=n)
    return n / summary.busy_seconds if summary.busy_seconds > 0 else 0.0


def measure_latency(
    kafka: KafkaSettings, topics: TopicSettings, model_file: Path, rate: float, n: int, batch: int
) -> list[float]:
    """End-to-end latency (request produced to prediction consumed) under a fixed offered load.

    The scorer runs as its own process, as it would in production, so that the load generator
    and the reader here do not share its interpreter.
    """
    group = f"bench-latency-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    command = [
        sys.executable, "-m", "riverrun.workers.cli", "--log-level", "WARNING", "score",
        "--bootstrap-servers", kafka.bootstrap_servers,
        "--topic-requests", topics.requests, "--topic-predictions", topics.predictions,
        "--topic-dead-letters", topics.dead_letters,
        "--model-file", str(model_file), "--model-name", MODEL_NAME,
        "--group-id", group, "--worker-id", "bench-latency", "--batch-size", str(batch),
    ]  # fmt: skip
    scorer = subprocess.Popen(command, env=env)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    reader = Consumer(
        kafka.client_config(
            {
                "group.id": f"{group}-reader",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "enable.auto.commit": False,
            }
        )
    )
    reader.subscribe([topics.predictions])
    done = threading.Event()

    def read() -> None:
        # poll() hands over each record as soon as it arrives; consume(n) would wait to fill n.
        while not done.is_set():
            record = reader.poll(0.1)
            if record is not None and record.error() is None:
                received = time.time()
                request_id = orjson.loads(record.value())["request_id"]
                start = sent.get(request_id)
                if start is not None:
                    latencies.append((received - start) * 1000.0)

    try:
        _wait_for_scorer_ready(kafka, topics, sent, latencies)
        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        producer = Producer({**_producer_config(kafka), "linger.ms": 1})
        rows = _rows(n, seed=11)
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for i, row in enumerate(rows):
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += interval
            request_id = f"lat-{i}"
            payload = orjson.dumps({"request_id": request_id, "model": MODEL_NAME, "features": row})
            sent[request_id] = time.time()
            producer.produce(topics.requests, payload, request_id.encode())
            producer.poll(0)
        producer.flush(30)
        deadline = time.monotonic() + 30
        while len(latencies) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        done.set()
        thread.join(5)
    finally:
        scorer.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            scorer.wait(30)
        if scorer.poll() is None:
            scorer.kill()
        reader.close()
    return latencies


def _wait_for_scorer_ready(
    kafka: KafkaSettings, topics: TopicSettings, sent: dict[str, float], latencies: list[float]
) -> None:
    """Send warm-up requests until one is answered, so group joining is not counted."""
    producer = Producer(_producer_config(kafka))
    probe = Consumer(
        kafka.client_config(
            {"group.id": f"warmup-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
        )
    )
    probe.subscribe([topics.predictions])
    row = _rows(1)[0]
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            payload = orjson.dumps({"request_id": "warmup", "model": MODEL_NAME, "features": row})
            producer.produce(topics.requests, payload, b"warmup")
            producer.flush(10)
            for record in probe.consume(10, 1.0):
                if record.error() is None:
                    return
        raise RuntimeError("the scorer answered no warm-up request within 120 s")
    finally:
        probe.close()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the inclusive method; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


@contextlib.contextmanager
def _broker(kafka: KafkaSettings | None) -> Iterator[tuple[KafkaSettings, str]]:
    if kafka is not None:
        yield kafka, "external"
        return
    from riverrun.workers.broker.tansu import start_tansu

    with start_tansu() as broker:
        yield KafkaSettings(bootstrap_servers=broker.bootstrap_servers), "tansu"


def run_bench(
    messages: int,
    rate: float,
    latency_messages: int,
    batch: int,
    kafka: KafkaSettings | None,
    partitions: int = 4,
) -> BenchResult:
    """Run every measurement against one broker, on the same data, and return the figures."""
    rows = _rows(messages)
    model = _trained_model()
    with tempfile.TemporaryDirectory() as tmp, _broker(kafka) as (settings, broker_name):
        model_file = Path(tmp) / "bench.pkl"
        model_file.write_bytes(pickle.dumps(model))
        suffix = uuid.uuid4().hex[:8]
        topics = TopicSettings(**{r: f"bench-{n}-{suffix}" for r, n in TopicSettings().all().items()})
        create_topics(settings, topics, partitions=partitions)
        sink_topics = TopicSettings(**{r: f"{n}-sink" for r, n in topics.all().items()})
        create_topics(settings, sink_topics, partitions)
        sink = sink_topics.predictions
        logger.info("loading %d requests into %s", messages, topics.requests)
        _load(settings, topics.requests, _payloads(rows, "bench"), "bench")
        model_rate = measure_model(model, rows[: min(len(rows), 50_000)])
        fast_rate = measure_fast_path(model, rows[: min(len(rows), 50_000)], batch)
        logger.info("measuring the raw pipe")
        limit = measure_limit(settings, topics.requests, sink, messages, batch)
        logger.info("measuring the scorer")
        scorer_rate = measure_scorer(settings, topics, model_file, messages, batch)
        logger.info("measuring latency at %g requests/s", rate)
        # Fresh topics: the throughput runs' backlog must not queue ahead of these requests.
        latency_topics = TopicSettings(**{r: f"{n}-latency" for r, n in topics.all().items()})
        create_topics(settings, latency_topics, partitions=partitions)
        latencies = measure_latency(
            settings, latency_topics, model_file, rate, latency_messages, batch
        )
    return BenchResult(
        messages=messages,
        broker=broker_name,
        model="StandardScaler | LogisticRegression",
        limit_msgs_per_s=round(limit, 1),
        model_msgs_per_s=round(model_rate, 1),
        scorer_msgs_per_s=round(scorer_rate, 1),
        ratio_to_limit=round(scorer_rate / limit, 3) if limit else 0.0,
        fast_path_msgs_per_s=round(fast_rate, 1) if fast_rate else None,
        latency_rate_per_s=rate,
        latency_messages=len(latencies),
        latency_p50_ms=round(percentile(latencies, 0.5), 2),
        latency_p99_ms=round(percentile(latencies, 0.99), 2),
    )


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun bench`."""
    parser.add_argument("--messages", type=int, default=200_000, help="Requests to load [200000].")
    parser.add_argument(
        "--rate", type=float, default=2_000.0, help="Offered load for latency, per second [2000]."
    )
    parser.add_argument(
        "--latency-messages", type=int, default=10_000, help="Requests in the latency run [10000]."
    )
    parser.add_argument("--batch-size", type=int, default=1_000, help="Consume batch size [1000].")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument(
        "--freshness",
        action="store_true",
        help="Measure label-to-served-snapshot freshness and the learner's speed instead.",
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="Freshness: seconds of labelled traffic [20]."
    )
    parser.add_argument(
        "--backlog", type=int, default=20_000, help="Freshness: labels for the learner's speed."
    )
    add_section_flags(parser, "kafka", KafkaSettings, only=["bootstrap_servers"])
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    overrides = collect_section_flags(args).get("kafka")
    kafka = KafkaSettings(**overrides) if overrides else None
    if args.freshness:
        from riverrun.workers.tools.freshness import measure_freshness

        rate = args.rate if args.rate != 2_000.0 else 200.0
        with tempfile.TemporaryDirectory() as tmp, _broker(kafka) as (settings, name):
            fresh = measure_freshness(settings, name, rate, args.seconds, args.backlog, Path(tmp))
        _print(fresh, args.json)
        return 0
    result = run_bench(args.messages, args.rate, args.latency_messages, args.batch_size, kafka)
    _print(result, args.json)
    return 0


def _print(result: BaseModel, as_json: bool) -> None:
    if as_json:
        print(result.model_dump_json())
    else:
        for key, value in result.model_dump().items():
            print(f"{key:>24}: {value}")
