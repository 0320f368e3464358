"""`riverrun bench`: the scorer's speed as ratios to hand-written loops, measured in one run.

River and the scorer are imported when a measurement runs, so that the parser stays quick.

Over the same broker and the same data: the raw consume-and-produce limit (bytes untouched); a
hand-written reference loop (consume a batch, orjson, River's `predict_proba_one` per message,
produce, commit per batch); the model's own `predict_proba_one` rate with no Kafka; the real
scorer end to end, at-least-once and exactly-once; end-to-end latency percentiles under a fixed
offered load; and `predict()` round trips through the client. `--poison-every N` adds the
scorer's good-record rate when one request in N carries a category where a number belongs.
`--models N` measures many models against a small cache instead (`bench_models.py`).
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
from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import BaseModel, Field

from riverrun.producers.files import FileOptions, add_file_flags, file_options
from riverrun.schemas import KafkaSettings, TopicSettings, add_section_flags, collect_section_flags
from riverrun.workers.broker.topics import create_topics
from riverrun.workers.runtime.kafka import produce
from riverrun.workers.scorer.settings import ScorerOptions, ScorerSettings

logger = logging.getLogger(__name__)

MODEL_NAME = "bench"
TRAIN_ROWS = 5_000


# Rounds of the reference loop and the scorer's modes, measured in turns: each rate is the best of
# its rounds, each ratio the median of its rounds' ratios.
ROUNDS = 3


class BenchResult(BaseModel):
    """What `riverrun bench --json` prints."""

    messages: int
    broker: str
    model: str
    dataset: str
    limit_msgs_per_s: float = Field(description="Raw consume-and-produce loop, bytes untouched.")
    reference_msgs_per_s: float = Field(
        description="Hand-written loop: consume, orjson, predict_proba_one, produce, commit."
    )
    model_msgs_per_s: float = Field(description="River's predict_proba_one loop, no Kafka.")
    scorer_msgs_per_s: float = Field(description="The real scorer, decode to acknowledged output.")
    ratio_to_limit: float = Field(description="scorer_msgs_per_s / limit_msgs_per_s.")
    ratio_to_reference: float = Field(
        description="Scorer / reference loop, within each round; the median of the rounds."
    )
    exactly_once_msgs_per_s: float = Field(description="The scorer with --exactly-once.")
    exactly_once_ratio: float = Field(
        description="Exactly-once / at-least-once, within each round; the median of the rounds."
    )
    fast_path_msgs_per_s: float | None = Field(
        default=None, description="The vectorised scorer's rate over the same rows, no Kafka."
    )
    latency_rate_per_s: float
    latency_warmup_s: float = Field(description="Seconds of the same load before the count.")
    latency_messages: int
    latency_p50_ms: float
    latency_p99_ms: float
    predict_calls: int = Field(description="Sequential predict() round trips measured.")
    predict_first_ms: float = Field(description="The first predict() of a new client.")
    predict_p50_ms: float
    predict_p99_ms: float
    poison_every: int | None = None
    poisoned_good_msgs_per_s: float | None = Field(
        default=None, description="Good records per second when one in N is poisoned."
    )
    poisoned_ratio: float | None = Field(
        default=None,
        description="Good records per second poisoned / clean, within each round; the median "
        "of the rounds.",
    )


def _rows(n: int, seed: int = 7, dataset: str | None = None,
          file: FileOptions | None = None) -> list[dict[str, Any]]:
    """`n` rows of Agrawal (floats), or of a dataset (cycled when it is shorter)."""
    if dataset is None:
        from river.datasets import synth

        return [{k: float(v) for k, v in x.items()} for x, _ in synth.Agrawal(seed=seed).take(n)]
    from riverrun.producers.dataset import load

    rows = [dict(x) for x, _ in load(dataset, seed=seed, limit=n, file=file)]
    if not rows:
        raise ValueError(f"dataset {dataset} has no rows")
    return [rows[i % len(rows)] for i in range(n)]


def _trained_model(dataset: str | None = None, file: FileOptions | None = None) -> Any:
    """`StandardScaler | LogisticRegression` on Agrawal, or what `train` fits on a dataset."""
    if dataset is not None:
        from riverrun.workers.tools.train import train_linear

        return train_linear(dataset, TRAIN_ROWS, seed=1, file=file)
    from river import linear_model, preprocessing
    from river.datasets import synth

    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in synth.Agrawal(seed=1).take(TRAIN_ROWS):
        model.learn_one({k: float(v) for k, v in x.items()}, y)
    return model


def _payloads(rows: list[dict[str, Any]], prefix: str) -> list[bytes]:
    return [
        orjson.dumps({"request_id": f"{prefix}-{i}", "model": MODEL_NAME, "features": row})
        for i, row in enumerate(rows)
    ]


def poisoned(rows: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """The rows with a category string in place of the first feature of one row in `every`."""
    out = []
    for i, row in enumerate(rows):
        if i % every == every - 1:
            first = next(iter(row))
            row = {**row, first: "category"}
        out.append(row)
    return out


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


def measure_reference(
    kafka: KafkaSettings, source: str, sink: str, model: Any, n: int, batch: int
) -> float:
    """The hand-written loop a user would write, as the scorer's throughput anchor.

    Consume a batch, orjson each message, River's `predict_proba_one`, produce the answer,
    commit once per batch.

    No riverrun code in it: the throughput anchor the scorer is held to.
    """
    consumer = Consumer(kafka.client_config({
        "group.id": f"bench-reference-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "fetch.wait.max.ms": 100,
    }))  # fmt: skip
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
                if record.error() is not None:
                    continue
                request = orjson.loads(record.value())
                proba = model.predict_proba_one(request["features"])
                answer = orjson.dumps({"request_id": request["request_id"],
                                       "model": request["model"],
                                       "prediction": max(proba, key=proba.get),
                                       "proba": {str(k): v for k, v in proba.items()}})
                while True:
                    try:
                        producer.produce(sink, answer, record.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                seen += 1
            producer.poll(0)
            consumer.commit(asynchronous=True)
        producer.flush(60)
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        consumer.close()
    return n / elapsed if elapsed > 0 else 0.0


def measure_model(model: Any, rows: list[dict[str, Any]]) -> float:
    """River's own `predict_proba_one` loop over the rows, no Kafka."""
    started = time.perf_counter()
    for row in rows:
        model.predict_proba_one(row)
    return len(rows) / (time.perf_counter() - started)


def measure_fast_path(model: Any, rows: list[dict[str, Any]], batch: int) -> float | None:
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
    kafka: KafkaSettings, topics: TopicSettings, model_file: Path, n: int, batch: int,
    *, exactly_once: bool = False, good: int | None = None,
) -> float:
    """The real scorer, in this process, from its first record to its last acknowledged output.

    Returns `good` records (all `n` by default) per second of the scorer's busy time.
    """
    suffix = uuid.uuid4().hex[:8]
    settings = ScorerSettings(
        kafka=kafka,
        topics=topics,
        scorer=ScorerOptions(
            model_file=model_file,
            model_name=MODEL_NAME,
            group_id=f"bench-scorer-{suffix}",
            worker_id=f"bench-{suffix}",
            batch_size=batch,
            exactly_once=exactly_once,
        ),
    )
    from riverrun.workers.runtime.heap import settled_heap
    from riverrun.workers.scorer.loop import Scorer
    from riverrun.workers.scorer.model import FileModelSource, load_model_file

    source = FileModelSource(load_model_file(model_file, MODEL_NAME))
    with settled_heap():  # as `riverrun score` runs it
        summary = Scorer(settings, source).run(max_messages=n)
    counted = n if good is None else good
    return counted / summary.busy_seconds if summary.busy_seconds > 0 else 0.0


def measure_latency(
    kafka: KafkaSettings, topics: TopicSettings, model_file: Path, rate: float, n: int, batch: int,
    rows: list[dict[str, Any]], predict_calls: int = 200, warmup_s: float = 20.0,
) -> tuple[list[float], list[float]]:
    """End-to-end latency under a fixed offered load, then `predict()` round trips.

    Latency is from a request produced to its prediction consumed, counted after `warmup_s`
    seconds of the same load; the round trips are a new client's, one after another (its first
    one included).

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
    from riverrun.workers.runtime.heap import settled_heap

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
        _wait_for_scorer_ready(kafka, topics, rows[0])
        # Assigned at the end of every partition, not joined to a group: a group's first
        # assignment would hold the first predictions back and count as latency.
        metadata = reader.list_topics(topics.predictions, timeout=10)
        reader.assign([
            TopicPartition(topics.predictions, p,
                           reader.get_watermark_offsets(TopicPartition(topics.predictions, p),
                                                        timeout=10)[1])
            for p in metadata.topics[topics.predictions].partitions
        ])  # fmt: skip
        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        # The load generator and the reader time the requests: a full collection of this
        # process's heap (the bench's rows and the runs before) would stall both and read as
        # the scorer's latency, so what is alive now is kept out of the collector's way.
        with settled_heap():
            producer = Producer({**_producer_config(kafka), "linger.ms": 1})
            # Connected, with its producer id, before the clock runs: a first record waits for
            # both. Every partition once (the scorer's outputs too), so no first write is timed.
            for p in range(len(metadata.topics[topics.predictions].partitions) * 8):
                warm = orjson.dumps({"request_id": f"warmup-{p}", "model": MODEL_NAME,
                                     "features": rows[0]})  # fmt: skip
                producer.produce(topics.requests, warm, f"warmup-{p}".encode())
            producer.flush(10)
            # The same load, untimed, first: a broker JVM answers slowly until its compiler
            # has warmed up to this load's paths (fetches that wait, small produce requests).
            _offer(producer, topics.requests, rows, rate, int(rate * warmup_s), "warm")
            time.sleep(0.5)
            _offer(producer, topics.requests, rows, rate, n, "lat", sent)
            deadline = time.monotonic() + 30
            while len(latencies) < n and time.monotonic() < deadline:
                time.sleep(0.1)
            done.set()
            thread.join(5)
            round_trips = measure_predict(kafka, topics, rows, predict_calls)
    finally:
        scorer.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            scorer.wait(30)
        if scorer.poll() is None:
            scorer.kill()
        reader.close()
    return latencies, round_trips


def _offer(
    producer: Producer, topic: str, rows: list[dict[str, Any]], rate: float, n: int, prefix: str,
    sent: dict[str, float] | None = None,
) -> None:
    """Produce `n` requests at `rate` per second (rows reused in turn), noting when each was
    sent in `sent`; then wait for all to be acknowledged."""
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(n):
        now = time.perf_counter()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        request_id = f"{prefix}-{i}"
        payload = orjson.dumps({"request_id": request_id, "model": MODEL_NAME,
                                "features": rows[i % len(rows)]})  # fmt: skip
        if sent is not None:
            sent[request_id] = time.time()
        producer.produce(topic, payload, request_id.encode())
        producer.poll(0)
    producer.flush(30)


def measure_predict(
    kafka: KafkaSettings, topics: TopicSettings, rows: list[dict[str, Any]], calls: int
) -> list[float]:
    """Milliseconds of each `RiverrunClient.predict()`, one after another, from a new client."""
    from riverrun.producers import RiverrunClient

    took = []
    with RiverrunClient(kafka, topics) as client:
        for i in range(calls):
            started = time.perf_counter()
            client.predict(MODEL_NAME, rows[i % len(rows)], timeout=30)
            took.append((time.perf_counter() - started) * 1000.0)
    return took


def _wait_for_scorer_ready(
    kafka: KafkaSettings, topics: TopicSettings, row: dict[str, Any]
) -> None:
    """Send warm-up requests until one is answered, so group joining is not counted."""
    producer = Producer(_producer_config(kafka))
    probe = Consumer(
        kafka.client_config(
            {"group.id": f"warmup-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
        )
    )
    probe.subscribe([topics.predictions])
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
    *,
    dataset: str | None = None,
    file: FileOptions | None = None,
    poison_every: int | None = None,
    predict_calls: int = 200,
    latency_warmup_s: float = 20.0,
) -> BenchResult:
    """Run every measurement against one broker, on the same data, and return the figures."""
    rows = _rows(messages, dataset=dataset, file=file)
    model = _trained_model(dataset, file)
    with tempfile.TemporaryDirectory() as tmp, _broker(kafka) as (settings, broker_name):
        model_file = Path(tmp) / "bench.pkl"
        model_file.write_bytes(pickle.dumps(model))

        def fresh_topics(tag: str) -> TopicSettings:
            suffix = f"{tag}-{uuid.uuid4().hex[:8]}"
            names = {r: f"bench-{n}-{suffix}" for r, n in TopicSettings().all().items()}
            created = TopicSettings(**names)
            create_topics(settings, created, partitions=partitions)
            return created

        topics, sink = fresh_topics("in"), fresh_topics("sink").predictions
        logger.info("loading %d requests into %s", messages, topics.requests)
        _load(settings, topics.requests, _payloads(rows, "bench"), "bench")
        sample = rows[: min(len(rows), 50_000)]
        model_rate = measure_model(model, sample)
        fast_rate = measure_fast_path(model, sample, batch)
        logger.info("measuring the raw pipe")
        limit = measure_limit(settings, topics.requests, sink, messages, batch)
        dirty = None
        if poison_every:
            dirty = fresh_topics("poison")
            _load(settings, dirty.requests, _payloads(poisoned(rows, poison_every), "bench"),
                  "bench")  # fmt: skip
        # The reference loop and the scorer's modes in turns. A shared machine drifts over a run,
        # so a ratio is taken within each round, between runs seconds apart, and the median of
        # the rounds is reported; each rate is the best of its rounds.
        best: dict[str, float] = {}
        paired: dict[str, list[float]] = {"reference": [], "eos": [], "poisoned": []}
        for round_ in range(1, ROUNDS + 1):
            logger.info("round %d of %d: the reference loop, then the scorer at-least-once, "
                        "exactly-once%s", round_, ROUNDS,
                        " and with poisoned requests" if dirty else "")  # fmt: skip
            rates = {
                "reference": measure_reference(settings, topics.requests, sink, model, messages,
                                               batch),  # fmt: skip
                "scorer": measure_scorer(settings, topics, model_file, messages, batch),
            }
            if dirty is not None and poison_every:
                rates["poisoned"] = measure_scorer(settings, dirty, model_file, messages, batch,
                                                   good=messages - messages // poison_every)
            rates["eos"] = measure_scorer(settings, topics, model_file, messages, batch,
                                          exactly_once=True)  # fmt: skip
            logger.info("round %d: %s", round_,
                        ", ".join(f"{what} {value:,.0f}/s" for what, value in rates.items()))
            for what, value in rates.items():
                best[what] = max(best.get(what, 0.0), value)
            if rates["scorer"] > 0 and rates["reference"] > 0:
                paired["reference"].append(rates["scorer"] / rates["reference"])
                paired["eos"].append(rates["eos"] / rates["scorer"])
                if "poisoned" in rates:
                    paired["poisoned"].append(rates["poisoned"] / rates["scorer"])
        reference, scorer_rate, eos_rate = best["reference"], best["scorer"], best["eos"]
        poisoned_rate = best.get("poisoned")
        logger.info("measuring latency at %g requests/s, then predict() round trips", rate)
        # Fresh topics: the throughput runs' backlog must not queue ahead of these requests.
        latencies, round_trips = measure_latency(
            settings, fresh_topics("latency"), model_file, rate, latency_messages, batch,
            _rows(latency_messages, seed=11, dataset=dataset, file=file), predict_calls,
            latency_warmup_s,
        )  # fmt: skip
    return BenchResult(
        messages=messages,
        broker=broker_name,
        model=_describe(model),
        dataset=dataset or "agrawal",
        limit_msgs_per_s=round(limit, 1),
        reference_msgs_per_s=round(reference, 1),
        model_msgs_per_s=round(model_rate, 1),
        scorer_msgs_per_s=round(scorer_rate, 1),
        ratio_to_limit=round(scorer_rate / limit, 3) if limit else 0.0,
        ratio_to_reference=(round(statistics.median(paired["reference"]), 3)
                            if paired["reference"] else 0.0),  # fmt: skip
        exactly_once_msgs_per_s=round(eos_rate, 1),
        exactly_once_ratio=round(statistics.median(paired["eos"]), 3) if paired["eos"] else 0.0,
        fast_path_msgs_per_s=round(fast_rate, 1) if fast_rate else None,
        latency_rate_per_s=rate,
        latency_warmup_s=latency_warmup_s,
        latency_messages=len(latencies),
        latency_p50_ms=round(percentile(latencies, 0.5), 2),
        latency_p99_ms=round(percentile(latencies, 0.99), 2),
        predict_calls=len(round_trips),
        predict_first_ms=round(round_trips[0], 2) if round_trips else 0.0,
        predict_p50_ms=round(percentile(round_trips, 0.5), 2),
        predict_p99_ms=round(percentile(round_trips, 0.99), 2),
        poison_every=poison_every,
        poisoned_good_msgs_per_s=round(poisoned_rate, 1) if poisoned_rate is not None else None,
        poisoned_ratio=(round(statistics.median(paired["poisoned"]), 3)
                        if paired["poisoned"] else None),  # fmt: skip
    )


def _describe(model: Any) -> str:
    from riverrun.workers.registry.render import render_pipeline

    try:
        return render_pipeline(model)
    except ValueError:
        return type(model).__name__


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
    parser.add_argument("--predict-calls", type=int, default=200,
                        help="predict() round trips measured, one after another [200].")
    parser.add_argument("--dataset", default=None,
                        help="Rows to score: a catalog name or a file [River's Agrawal].")
    add_file_flags(parser)
    parser.add_argument("--poison-every", type=int, default=None, metavar="N",
                        help="Also measure with a category string in one request in N.")
    parser.add_argument("--models", type=int, default=None, metavar="N",
                        help="Measure N distinct models against the scorer's model cache instead.")
    parser.add_argument("--model-cache-size", type=int, default=8,
                        help="With --models: the scorer's model cache [8].")
    parser.add_argument(
        "--latency-warmup", type=float, default=20.0, metavar="SECONDS",
        help="Seconds of the same offered load before latency is counted [20].",
    )
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
        "--backlog", type=int, default=20_000,
        help="Freshness: labels for the learner's speed, counted between a tenth and nine tenths "
        "learned; the learner reports in steps of thousands, so keep it in the tens of thousands "
        "[20000].",
    )
    parser.add_argument(
        "--learner-stage", choices=["both", "split"], default="both",
        help="Freshness: the learner as one process (`both`), or as a join and a learn process "
        "(`split`: `riverrun learn --stage join` and `--stage learn`) [both].",
    )
    parser.add_argument(
        "--per-key", action="store_true",
        help="Measure per-key models instead: their gain over the global model, RSS per 1,000 "
        "keys, restore time, and answering a cached, a loaded and no key (bench_keys.py).",
    )
    parser.add_argument("--keys", type=int, default=10_000,
                        help="Per key: keys written to the changelog and held [10000].")
    parser.add_argument("--labels-per-key", type=int, default=5,
                        help="Per key: labels each key learns before it is written [5].")
    parser.add_argument("--key-calls", type=int, default=1_000,
                        help="Per key: one-request batches timed per case [1000].")
    add_section_flags(parser, "kafka", KafkaSettings, only=["bootstrap_servers"])
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    overrides = collect_section_flags(args).get("kafka")
    kafka = KafkaSettings(**overrides) if overrides else None
    if args.freshness:
        from riverrun.workers.tools.freshness import measure_freshness

        rate = args.rate if args.rate != 2_000.0 else 200.0
        with tempfile.TemporaryDirectory() as tmp, _broker(kafka) as (settings, name):
            fresh = measure_freshness(settings, name, rate, args.seconds, args.backlog, Path(tmp),
                                      split=args.learner_stage == "split")  # fmt: skip
        _print(fresh, args.json)
        return 0
    if args.per_key:
        from riverrun.workers.tools.bench_keys import measure_per_key

        with _broker(kafka) as (settings, name):
            keyed = measure_per_key(settings, name, args.keys, args.labels_per_key,
                                    args.key_calls)  # fmt: skip
        _print(keyed, args.json)
        return 0
    file = file_options(args)
    if args.models:
        from riverrun.workers.tools.bench_models import measure_many_models

        with _broker(kafka) as (settings, name):
            many = measure_many_models(
                settings, name, args.models, args.model_cache_size,
                min(args.messages, 20_000), _rows(1_000), _trained_model(),
            )  # fmt: skip
        _print(many, args.json)
        return 0
    result = run_bench(args.messages, args.rate, args.latency_messages, args.batch_size, kafka,
                       dataset=args.dataset, file=file, poison_every=args.poison_every,
                       predict_calls=args.predict_calls,
                       latency_warmup_s=args.latency_warmup)  # fmt: skip
    _print(result, args.json)
    return 0


def _print(result: BaseModel, as_json: bool) -> None:
    if as_json:
        print(result.model_dump_json())
    else:
        for key, value in result.model_dump().items():
            print(f"{key:>24}: {value}")
