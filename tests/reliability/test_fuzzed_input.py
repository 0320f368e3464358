"""Fuzzed input: Hypothesis-generated malformed requests and feedback of many classes are all
dead-lettered with their reason and source coordinates, no worker crashes, the valid neighbours
are answered, and good records flow at least 90 % as fast as in a clean run."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import KafkaSettings, TopicSettings
from workers.registry import ModelSpec, Registry, RegistrySettings, build_estimator

from .conftest import Figures
from .fuzz import FEEDBACK_CLASSES, REQUEST_CLASSES, corpus, for_model
from .harness import outputs
from .harness.checker import Request, check_delivery
from .harness.loadgen import LoadGenerator
from .harness.processes import SIGNING_KEY, Workers, learner_argv, scorer_argv, wait_for
from .profile import PROFILE

pytestmark = pytest.mark.reliability


def produce_all(kafka: KafkaSettings, topic: str,
                records: list[tuple[bytes, bytes | None]]) -> list[Request]:
    """Produce records in order, as fast as the broker takes them; where each one landed."""
    load = LoadGenerator(kafka, topic, lambda i: records[i], total=len(records), rate=0)
    load.start().join(300)
    assert not load.failures, load.failures[:3]
    where = dict(zip(load.acked_index, load.acked, strict=True))
    return [where[i] for i in range(len(records))]


def good_request(i: int, rows: list[dict[str, float]]) -> tuple[bytes, bytes]:
    rid = f"r-{i}"
    return rid.encode(), orjson.dumps({"request_id": rid, "model": "phishing",
                                       "features": rows[i % len(rows)]})


def scoring_rate(kafka: KafkaSettings, topics: TopicSettings, workers: Workers,
                 model_file: Path, records: list[tuple[bytes, bytes | None]], good: int,
                 name: str) -> tuple[float, list[Request]]:
    """Good records per CPU-second of a scorer that reads `records`; and their coordinates.

    CPU time, not wall time: on a shared two-core machine a wall-clock span mostly measures
    who else had the processor. The scorer is started first and measured from the moment it
    is ready, so its start-up is not counted.
    """
    scorer = workers.start(name, scorer_argv(
        kafka.bootstrap_servers, topics, f"{name}-{uuid.uuid4().hex[:8]}", name,
        model_file=model_file))
    wait_for(scorer.ready, 90, f"{name} to be ready")
    before = scorer.cpu_seconds()
    acked = produce_all(kafka, topics.requests, records)
    wait_for(lambda: scorer.metric_sum("riverrun_scorer_consumed_total") >= len(records), 300,
             f"{name} to consume {len(records)} records")
    spent = scorer.cpu_seconds() - before
    assert scorer.stop() == 0, scorer.output()[-3000:]
    return good / spent, acked


def test_malformed_requests_are_dead_lettered_and_neighbours_scored(
    kafka: KafkaSettings, make_topics: Any, workers: Workers, model_file: Path,
    rows: list[dict[str, float]], figures: Figures,
) -> None:
    per_class = max(1, PROFILE.fuzz_examples // len(REQUEST_CLASSES))
    bad: list[tuple[str, bytes | None]] = [
        (kind, value) for kind, (strategy, _) in REQUEST_CLASSES.items()
        for value in corpus(strategy, per_class)]
    good = PROFILE.fuzz_good
    assert good > len(bad)
    # Malformed records spread evenly through the stream, each between valid neighbours.
    kinds = list(REQUEST_CLASSES)
    spacing = good // len(bad)
    mixed: list[tuple[bytes, bytes | None]] = []
    for i in range(good):
        if i % spacing == spacing // 2 and i // spacing < len(bad):
            kind, value = bad[i // spacing]
            mixed.append((f"bad-{kinds.index(kind)}-{i}".encode(), value))
        mixed.append(good_request(i, rows))
    clean = [good_request(i, rows) for i in range(good)]

    # Best of two alternated runs each: one unlucky moment must not decide the ratio.
    rates: dict[str, list[float]] = {"clean": [], "fuzzed": []}
    for run in range(2):
        for label, records in (("clean", clean), ("fuzzed", mixed)):
            topics = make_topics()
            rate, coordinates = scoring_rate(kafka, topics, workers, model_file, records, good,
                                             f"{label}{run}")
            rates[label].append(rate)
            if label == "fuzzed" and run == 0:
                judged, acked = topics, coordinates

    letters = outputs.letters(kafka, judged.dead_letters)
    answers = outputs.answers(kafka, judged.predictions)
    kind_at = {(r.partition, r.offset): kinds[int(r.request_id.split("-")[1])] for r in acked
               if r.request_id.startswith("bad-")}
    good_acked = [r for r in acked if not r.request_id.startswith("bad-")]
    lettered = {(x.source_partition, x.source_offset): x for x in letters
                if x.source_topic == judged.requests}
    wrong = {}
    for coordinates, kind in kind_at.items():
        letter = lettered.get(coordinates)
        expected = REQUEST_CLASSES[kind][1]
        if letter is None or letter.error_class != expected or not letter.reason:
            wrong[coordinates] = (kind, letter.error_class if letter else None)
    delivery = check_delivery(good_acked, answers)
    ratio = max(rates["fuzzed"]) / max(rates["clean"])
    figures.record("fuzzed_requests", classes=len(REQUEST_CLASSES), malformed=len(bad),
                   dead_lettered=len(kind_at) - len(wrong), misclassified_or_missing=len(wrong),
                   valid=len(good_acked), valid_missing=delivery.missing,
                   clean_rate=round(max(rates["clean"])), fuzzed_good_rate=round(
                       max(rates["fuzzed"])), throughput_ratio=round(ratio, 3),
                   rate_basis="good records per scorer CPU-second, best of two runs each",
                   rates={k: [round(r) for r in v] for k, v in rates.items()},
                   by_class=dict(sorted(Counter(x.error_class for x in letters).items())))
    assert len(REQUEST_CLASSES) >= 12
    assert wrong == {}, list(wrong.items())[:5]
    assert len(letters) == len(bad)
    assert delivery.missing == 0 and delivery.inconsistent == 0, delivery
    assert ratio >= 0.9, rates



def label(rid: str, model: str, y: bool, x: dict[str, float]) -> bytes:
    return orjson.dumps({"request_id": rid, "model": model, "label": y, "features": x,
                         "observed_at": "2026-01-01T00:00:00+00:00"})


def test_malformed_feedback_is_dead_lettered_and_good_labels_learned(
    kafka: KafkaSettings, make_topics: Any, workers: Workers,
    phishing: list[tuple[dict[str, float], bool]], figures: Figures,
) -> None:
    model = f"fuzzed-{uuid.uuid4().hex[:6]}"
    topics = make_topics()
    spec = ModelSpec(pipeline="StandardScaler | LogisticRegression", task="binary",
                     label_type="bool")
    with Registry(kafka, topics, RegistrySettings(signing_key=SIGNING_KEY)) as registry:  # type: ignore[arg-type]  # str -> SecretStr
        registry.release(model, spec, build_estimator(spec))
    classes = {**FEEDBACK_CLASSES}
    per_class = max(1, PROFILE.fuzz_examples // len(classes))
    kinds = [*classes, "second-label"]
    good = phishing[:max(per_class * len(kinds), 200)]
    fill = for_model(model)
    records: list[tuple[bytes, bytes | None]] = []
    for kind_index, kind in enumerate(classes):
        for i, value in enumerate(corpus(classes[kind][0], per_class)):
            records.append((f"bad-{kind_index}-{i}".encode(), fill(value)))
    # A second label for a request already labelled: refused as a duplicate, never learned.
    # Keyed like the first, so it lands on the same partition, after it.
    records += [(f"r-{i}".encode(), label(f"r-{i}", model, not y, x))
                for i, (x, y) in enumerate(good[:per_class])]
    kind_of = [kind_index for kind_index, kind in enumerate(classes)
               for _ in range(per_class)] + [len(classes)] * per_class
    labels = [(f"r-{i}".encode(), label(f"r-{i}", model, y, x)) for i, (x, y) in enumerate(good)]
    # The first labels precede their duplicates; the rest are interleaved with the bad ones.
    head, tail = labels[:per_class], labels[per_class:]
    mixed: list[tuple[bytes, bytes | None]] = list(head)
    bad_kind: dict[int, int] = {}  # position in `mixed` -> class index
    for i in range(max(len(records), len(tail))):
        if i < len(records):
            bad_kind[len(mixed)] = kind_of[i]
            mixed.append(records[i])
        if i < len(tail):
            mixed.append(tail[i])
    acked = produce_all(kafka, topics.feedback, mixed)

    learner = workers.start("learner", learner_argv(kafka.bootstrap_servers, topics, model,
                                                    ["--idle-timeout", "5"]), metrics=False)
    assert learner.wait(300) == 0, learner.output()[-3000:]

    letters = {(x.source_partition, x.source_offset): x
               for x in outputs.letters(kafka, topics.dead_letters)
               if x.source_topic == topics.feedback}
    expected = {**{k: v[1] for k, v in classes.items()}, "second-label": "DuplicateLabel"}
    wrong = {}
    for position, kind_index in bad_kind.items():
        kind, r = kinds[kind_index], acked[position]
        letter = letters.get((r.partition, r.offset))
        if letter is None or letter.error_class != expected[kind] or not letter.reason:
            wrong[position] = (kind, letter.error_class if letter else None)
    examples = [orjson.loads(m.value())["request_id"]
                for m in outputs.read_topic(kafka, topics.examples)]
    figures.record("fuzzed_feedback", classes=len(kinds), malformed=len(records),
                   dead_lettered=len(records) - len(wrong), misclassified_or_missing=len(wrong),
                   good_labels=len(good), learned=len(examples),
                   by_class=dict(sorted(Counter(x.error_class for x in letters.values()).items())))
    assert wrong == {}, list(wrong.items())[:5]
    assert sorted(examples) == sorted(f"r-{i}" for i in range(len(good)))
