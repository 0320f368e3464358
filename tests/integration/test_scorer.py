"""The scoring worker on a real broker: one prediction per valid request, dead letters with
reasons, graceful stops, group scaling, exactly-once under SIGKILL, and request-reply."""

from __future__ import annotations

import signal
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from riverrun.producers.client import RiverrunClient
from riverrun.schemas import DeadLetter, KafkaSettings, PredictionMade, TopicSettings, decode
from riverrun.workers.scorer.loop import Scorer
from riverrun.workers.scorer.model import FileModelSource, load_model_file
from riverrun.workers.scorer.settings import ScorerOptions, ScorerSettings

from .conftest import (
    MODEL_NAME,
    count_so_far,
    produce,
    read_all,
    request_ids,
    request_payload,
    wait_for,
)

# Ten-plus ways a request can be wrong, each with the error class it must be dead-lettered as.
MALFORMED: dict[str, tuple[bytes | None, str]] = {
    "not-json": (b"{this is not json", "NotJson"),
    "not-utf8": (b"\xff\xfe\xfd binary", "NotUtf8"),
    "wrong-types": (b'{"request_id": 42, "model": "phishing", "features": {"a": 1}}', "InvalidEvent"),
    "missing-fields": (b'{"model": "phishing"}', "InvalidEvent"),
    "missing-features": (b'{"request_id": "m1", "model": "phishing", "features": {"age_of_domain": 1}}', "MissingFeatures"),
    "nan": (b'{"request_id": "n1", "model": "phishing", "features": {"a": NaN}}', "NotJson"),
    "infinite": (b'{"request_id": "i1", "model": "phishing", "features": {"a": 1e999}}', "NotJson"),
    "unknown-model": (b'{"request_id": "u1", "model": "nobody", "features": {"a": 1.0}}', "UnknownModel"),
    "oversized": (b'{"request_id": "o1", "model": "phishing", "features": {"a": "' + b"x" * 70_000 + b'"}}', "Oversized"),
    "empty": (b"", "EmptyValue"),
    "null": (None, "EmptyValue"),
    "extra-nesting": (b'{"request_id": "e1", "model": "phishing", "features": {"a": {"b": 1}}}', "InvalidEvent"),
    "json-array": (b"[1, 2, 3]", "InvalidEvent"),
}  # fmt: skip


def settings_for(kafka: KafkaSettings, topics: TopicSettings, model_file: Path, **scorer: Any) -> ScorerSettings:
    options = {"model_file": model_file, "model_name": MODEL_NAME,
               "group_id": f"scorers-{topics.requests}", "worker_id": "in-process", **scorer}
    return ScorerSettings(kafka=kafka, topics=topics, scorer=ScorerOptions(**options))


@pytest.mark.smoke
def test_every_valid_request_gets_one_prediction_and_bad_input_is_dead_lettered(
    kafka_settings: KafkaSettings, topics: TopicSettings, model_file: Path,
    phishing: list[tuple[dict[str, float], bool]], trained_model: Any,
) -> None:
    records: list[tuple[bytes | None, bytes | None]] = []
    bad_at: dict[int, str] = {}
    for i, (x, _) in enumerate(phishing[:600]):
        records.append((f"req-{i}".encode(), request_payload(i, x)))
        if i % 40 == 7 and len(bad_at) < len(MALFORMED):
            kind = list(MALFORMED)[len(bad_at)]
            bad_at[len(records)] = kind
            records.append((f"bad-{kind}".encode(), MALFORMED[kind][0]))
    assert len(bad_at) == len(MALFORMED)
    where = produce(kafka_settings, topics.requests, records)

    settings = settings_for(kafka_settings, topics, model_file)
    source = FileModelSource(load_model_file(model_file, MODEL_NAME))
    summary = Scorer(settings, source).run(max_messages=len(records), idle_timeout=60)
    assert summary.consumed == len(records)

    predictions = read_all(kafka_settings, topics.predictions, at_least=600)
    counts = Counter(request_ids(predictions))
    assert set(counts) == {f"req-{i}" for i in range(600)}
    assert max(counts.values()) == 1
    # The worker's answers are the model's own.
    by_id = {p.request_id: p for p in (decode(PredictionMade, r.value) for r in predictions)}
    for i in (0, 123, 599):
        made = by_id[f"req-{i}"]
        assert made.prediction == trained_model.predict_one(phishing[i][0])
        assert (made.model, made.version, made.snapshot, made.route) == (MODEL_NAME, 1, 0, "champion")
    # Each prediction lands on the partition of its request's key.
    partition_of = {key.decode(): where[j][0] for j, (key, _) in enumerate(records)
                    if j not in bad_at and key is not None}
    assert all(p.partition == partition_of[orjson.loads(p.value)["request_id"]]
               for p in predictions)

    letters = read_all(kafka_settings, topics.dead_letters, at_least=len(MALFORMED))
    assert len(letters) == len(MALFORMED)
    by_key = {r.key: r for r in letters}
    for position, kind in bad_at.items():
        letter = by_key[f"bad-{kind}".encode()]
        headers = DeadLetter.from_headers(list(letter.headers.items()))
        assert headers.error_class == MALFORMED[kind][1], kind
        assert headers.reason, kind
        assert (headers.source_topic, headers.source_partition, headers.source_offset) == (
            topics.requests, *where[position]), kind
        assert letter.value == records[position][1] or (not letter.value and not records[position][1])


@pytest.mark.smoke
def test_sigterm_mid_stream_loses_nothing(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    n = 6000
    rows = [x for x, _ in phishing]
    scorer = start_scorer()
    produce(kafka_settings, topics.requests,
            [(f"req-{i}".encode(), request_payload(i, rows[i % len(rows)])) for i in range(n)])
    wait_for(lambda: count_so_far(kafka_settings, topics.predictions, timeout=2) >= 200, 90,
             "the first predictions")
    scorer.signal(signal.SIGTERM)
    assert scorer.wait(60) == 0, scorer.output()
    assert "finishing the batch" in scorer.output()
    first_run = len(read_all(kafka_settings, topics.predictions, timeout=5))

    rest = start_scorer("--idle-timeout", "8", worker="second")
    assert rest.wait(180) == 0, rest.output()
    counts = Counter(request_ids(read_all(kafka_settings, topics.predictions, at_least=n)))
    missing = n - len(counts)
    duplicates = sum(c - 1 for c in counts.values())
    assert missing == 0
    # A clean stop commits exactly what was delivered: nothing is scored twice.
    assert duplicates == 0
    assert 0 < first_run < n or first_run == n


def test_a_second_worker_takes_over_partitions(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    rows = [x for x, _ in phishing]
    first = start_scorer(worker="first")
    produce(kafka_settings, topics.requests,
            [(f"req-{i}".encode(), request_payload(i, rows[i % len(rows)])) for i in range(2000)])
    wait_for(lambda: count_so_far(kafka_settings, topics.predictions, timeout=2) >= 2000, 90,
             "the first worker to score the first half")
    second = start_scorer(worker="second")
    wait_for(lambda: "assigned" in second.output(), 60, "the second worker's assignment")
    wait_for(lambda: "revoked" in first.output(), 60, "the first worker to give some partitions up")
    produce(kafka_settings, topics.requests,
            [(f"req-{i}".encode(), request_payload(i, rows[i % len(rows)])) for i in range(2000, 4000)])
    counts = Counter(request_ids(read_all(kafka_settings, topics.predictions, at_least=4000)))
    assert set(counts) == {f"req-{i}" for i in range(4000)}
    for process in (first, second):
        process.signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.output()
    assert "scored 0 records" not in second.output(), second.output()


# Apache Kafka only: Tansu shows aborted records to read_committed readers, so it cannot judge
# exactly-once (tests/integration/test_broker.py measures that).
def test_exactly_once_survives_sigkill_mid_transaction(
    broker: Any, kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]], record_property: Any,
) -> None:
    n = 3000
    rows = [x for x, _ in phishing]
    produce(kafka_settings, topics.requests,
            [(f"req-{i}".encode(), request_payload(i, rows[i % len(rows)])) for i in range(n)])
    doomed = start_scorer("--exactly-once", worker="eos",
                          env={"RIVERRUN_SCORER__CRASH_AT": "after-produce-before-commit:3"})
    assert doomed.wait(120) == -signal.SIGKILL, doomed.output()
    assert "crash point after-produce-before-commit reached" in doomed.output()
    # The killed worker left an open transaction with outputs in it: visible uncommitted.
    uncommitted = read_all(kafka_settings, topics.predictions, isolation="read_uncommitted",
                           timeout=5)
    assert len(uncommitted) >= 400

    survivor = start_scorer("--exactly-once", "--idle-timeout", "8", worker="eos")
    assert survivor.wait(180) == 0, survivor.output()
    counts = Counter(request_ids(read_all(kafka_settings, topics.predictions, at_least=n)))
    missing = n - len(counts)
    duplicates = sum(c - 1 for c in counts.values())
    record_property("eos_missing", missing)
    record_property("eos_duplicates", duplicates)
    print(f"\nexactly-once on {broker.engine}: missing={missing} duplicates={duplicates}")
    assert missing == 0
    if broker.capabilities.has("read_committed"):
        assert duplicates == 0
    else:
        # The broker shows aborted records to read_committed readers, so duplicates here are
        # the broker's; the figure is reported, not judged.
        assert duplicates <= len(uncommitted)


def test_request_reply_client_gets_the_models_answer(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]], trained_model: Any,
) -> None:
    scorer = start_scorer()
    with RiverrunClient(kafka_settings, topics) as client:
        wait_for(lambda: "assigned" in scorer.output(), 60, "the scorer to join its group")
        for x, _ in phishing[1000:1005]:
            made = client.predict(MODEL_NAME, x, timeout=30)
            assert made.prediction == trained_model.predict_one(x)
            assert made.proba is not None
            expected = trained_model.predict_proba_one(x)[True]
            assert abs(made.proba["True"] - expected) < 1e-12


def test_metrics_and_probes_follow_the_worker(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]], unused_tcp_port: int,
) -> None:
    base = f"http://127.0.0.1:{unused_tcp_port}"
    scorer = start_scorer("--metrics-port", str(unused_tcp_port), "--statistics-interval-ms", "500")

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=2) as response:  # noqa: S310  # loopback
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    wait_for(lambda: get("/livez")[0] == 200, 30, "/livez")
    wait_for(lambda: get("/readyz")[0] == 200, 60, "/readyz after joining the group")
    produce(kafka_settings, topics.requests,
            [(f"req-{i}".encode(), request_payload(i, x)) for i, (x, _) in enumerate(phishing[:300])]
            + [(b"bad", b"nope")])
    wait_for(lambda: "riverrun_scorer_consumed_total 301.0" in get("/metrics")[1], 60,
             "the consumed counter to reach 301")
    body = get("/metrics")[1]
    assert 'riverrun_scorer_dead_letters_total{error_class="NotJson"} 1.0' in body
    assert f'riverrun_scorer_scored_total{{model="{MODEL_NAME}",route="champion",version="1"}} 300.0' in body
    assert "riverrun_scorer_end_to_end_latency_seconds_count 300.0" in body
    assert f'riverrun_scorer_model_info{{model="{MODEL_NAME}",snapshot="0",version="1"}} 1.0' in body

    def lags() -> dict[str, float]:
        prefix = 'riverrun_scorer_consumer_lag_records{partition="'
        return {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
                for line in get("/metrics")[1].splitlines()
                if line.startswith(prefix) and f'topic="{topics.requests}"' in line}

    # From librdkafka's statistics: every partition's lag, down to 0 once all is committed.
    wait_for(lambda: len(lags()) == 4 and sum(lags().values()) == 0, 60,
             "the consumer lag of all 4 partitions to reach 0")

    def staleness() -> float:
        name = f'riverrun_scorer_model_staleness_seconds{{model="{MODEL_NAME}",version="1"}}'
        line = next(line for line in get("/metrics")[1].splitlines() if line.startswith(name))
        return float(line.rsplit(" ", 1)[1])

    # The model file's age, growing between scrapes with no batch in between.
    first = staleness()
    wait_for(lambda: staleness() > first, 10, "the model's staleness to grow")
    scorer.signal(signal.SIGTERM)
    assert scorer.wait(60) == 0


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_records_at_the_size_limits_are_dead_lettered_cut_to_fit_and_the_rest_answered(
    kafka_settings: KafkaSettings, topics: TopicSettings, model_file: Path,
    phishing: list[tuple[dict[str, float], bool]], broker: Any, exactly_once: bool,
) -> None:
    if exactly_once and not (broker.capabilities and broker.capabilities.read_committed):
        pytest.skip(f"broker {broker.engine} lacks read_committed: exactly-once is not judged")
    # Just under what the broker takes on the requests topic, and a key as large as a value.
    broker_limit = _max_message_bytes(kafka_settings, topics.requests)
    huge_value = b"x" * (broker_limit - 1_000)
    huge_key = b"k" * 999_500
    records: list[tuple[bytes | None, bytes | None]] = [
        (f"req-{i}".encode(), request_payload(i, x)) for i, (x, _) in enumerate(phishing[:200])]
    records.insert(50, (b"big-value", huge_value))
    records.insert(120, (huge_key, request_payload(9999, phishing[0][0])))
    where = produce(kafka_settings, topics.requests, records)

    settings = settings_for(kafka_settings, topics, model_file, exactly_once=exactly_once)
    source = FileModelSource(load_model_file(model_file, MODEL_NAME))
    summary = Scorer(settings, source).run(max_messages=len(records), idle_timeout=60)
    assert summary.consumed == len(records)

    counts = Counter(request_ids(read_all(kafka_settings, topics.predictions, at_least=200)))
    assert set(counts) == {f"req-{i}" for i in range(200)} and max(counts.values()) == 1
    letters = {DeadLetter.from_headers(list(r.headers.items())).error_class: r
               for r in read_all(kafka_settings, topics.dead_letters, at_least=2)}
    oversized, too_large = letters["Oversized"], letters["OutputTooLarge"]
    cut = DeadLetter.from_headers(list(oversized.headers.items()))
    assert cut.value_bytes == len(huge_value) and oversized.value == huge_value[:len(oversized.value)]
    assert (cut.source_partition, cut.source_offset) == where[50]  # where to fetch the whole
    cut = DeadLetter.from_headers(list(too_large.headers.items()))
    assert cut.key_bytes == len(huge_key) and (cut.source_partition, cut.source_offset) == where[120]
    assert "shorter key" in cut.reason


@pytest.mark.requires("read_committed")
def test_an_exactly_once_transaction_takes_batches_while_more_keep_arriving(
    kafka_settings: KafkaSettings, topics: TopicSettings, model_file: Path,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    """Under a backlog one transaction takes batch after batch (a commit per batch was a quarter
    of the exactly-once throughput); each request is still answered exactly once."""
    n = 3000
    rows = [x for x, _ in phishing]
    produce(kafka_settings, topics.requests,
            [(f"req-{i}".encode(), request_payload(i, rows[i % len(rows)])) for i in range(n)])
    settings = settings_for(kafka_settings, topics, model_file, exactly_once=True,
                            batch_size=100, transaction_interval_ms=60_000)
    scorer = Scorer(settings, FileModelSource(load_model_file(model_file, MODEL_NAME)))
    summary = scorer.run(max_messages=n, idle_timeout=60)
    committed = scorer.metrics.registry.get_sample_value(
        "riverrun_scorer_transactions_total", {"outcome": "committed"})
    assert summary.consumed == n and summary.batches >= n // 100
    # A transaction commits when nothing more has arrived: between fetches, at most.
    assert committed is not None and 1 <= committed < summary.batches / 2, (committed, summary)
    counts = Counter(request_ids(read_all(kafka_settings, topics.predictions, at_least=n)))
    assert len(counts) == n and max(counts.values()) == 1


def _max_message_bytes(kafka: KafkaSettings, topic: str) -> int:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(kafka.client_config())
    (future,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
    entry = future.result(timeout=30).get("max.message.bytes")
    return int(entry.value) if entry is not None and entry.value else 1_048_588


def test_a_prediction_lands_on_its_requests_partition_whatever_the_upstream_partitioner(
    kafka_settings: KafkaSettings, topics: TopicSettings, model_file: Path,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    from confluent_kafka import Producer

    # librdkafka's own default (CRC32-based), as kcat and most non-Java clients use it.
    producer = Producer(kafka_settings.client_config({"partitioner": "consistent_random"}))
    where: dict[str, int] = {}
    for i, (x, _) in enumerate(phishing[:200]):
        producer.produce(topics.requests, request_payload(i, x), f"user-{i}".encode(),
                         on_delivery=lambda err, msg, i=i: where.__setitem__(f"req-{i}",
                                                                            msg.partition()))
    assert producer.flush(30) == 0 and len(where) == 200
    settings = settings_for(kafka_settings, topics, model_file)
    source = FileModelSource(load_model_file(model_file, MODEL_NAME))
    Scorer(settings, source).run(max_messages=200, idle_timeout=60)
    predictions = read_all(kafka_settings, topics.predictions, at_least=200)
    assert len(predictions) == 200
    assert all(p.partition == where[orjson.loads(p.value)["request_id"]] for p in predictions)
    assert len({p.partition for p in predictions}) > 1


@pytest.mark.requires("read_committed")
def test_two_exactly_once_scorers_with_one_worker_id_never_fence_each_other_for_ever(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    """The second takes the shared transactional id; the first, fenced, steps aside to an id of
    its own instead of taking it back. One is then frozen past its session and woken: the
    group's generation fences its stale transaction, and nothing is lost or doubled."""
    import threading
    import time

    n = 4000
    rows = [x for x, _ in phishing]
    first = start_scorer("--exactly-once", worker="shared")
    wait_for(lambda: "assigned" in first.output(), 60, "the first scorer to join")
    second = start_scorer("--exactly-once", worker="shared")
    done = threading.Event()

    def load() -> None:  # about 400 requests a second, for ten seconds
        for start in range(0, n, 200):
            produce(kafka_settings, topics.requests, [
                (f"req-{i}".encode(), request_payload(i, rows[i % len(rows)]))
                for i in range(start, start + 200)])  # fmt: skip
            time.sleep(0.5)
        done.set()

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for(lambda: "assigned" in second.output(), 60, "the second scorer to join")
        time.sleep(2)
        second.signal(signal.SIGSTOP)
        time.sleep(13)  # past its 10 s session: the group moves its partitions to the first
        second.signal(signal.SIGCONT)
        loader.join(60)
        assert done.is_set()
        wait_for(lambda: count_so_far(kafka_settings, topics.predictions, timeout=2) >= n, 120,
                 "every prediction")
    finally:
        loader.join(60)
        for scorer in (first, second):
            scorer.signal(signal.SIGCONT)
            scorer.signal(signal.SIGTERM)
        for scorer in (first, second):
            scorer.wait(60)
    counts = Counter(request_ids(read_all(kafka_settings, topics.predictions, at_least=n)))
    assert len(counts) == n and max(counts.values()) == 1
    logs = first.output() + second.output()
    assert logs.count("fenced: another producer took") >= 1, logs
    # Each steps aside at most once, and fatal failures do not repeat: no fencing back and
    # forth while both live (which had cost a third of the throughput and seconds of latency).
    for scorer in (first, second):
        out = scorer.output()
        assert out.count("fenced: another producer took") <= 1, out
        assert out.count("transaction failed fatally") <= 1, out
    print("\n" + "\n".join(line for line in logs.splitlines()
                             if "fenced" in line or "transaction" in line))
