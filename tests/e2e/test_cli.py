"""riverrun as a user runs it: every step through the `riverrun` command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from riverrun.schemas import KafkaSettings

RIVERRUN = str(Path(sys.executable).parent / "riverrun")


def riverrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RIVERRUN, "--log-format", "text", *args], capture_output=True,
                          text=True, timeout=timeout)


def read_ids(kafka: KafkaSettings, topic: str, want: int, timeout: float) -> Counter[str]:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "e2e-reader",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    try:
        while sum(seen.values()) < want and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    seen[orjson.loads(msg.value())["request_id"]] += 1
    finally:
        consumer.close()
    return seen


@pytest.mark.smoke
def test_topics_train_score_replay_through_the_cli(
    broker: object, kafka_settings: KafkaSettings, unique: object, tmp_path: Path
) -> None:
    suffix = unique("e2e")  # type: ignore[operator]  # the fixture is a callable
    topic_flags = [f"--topic-{role}={name}-{suffix}" for role, name in (
        ("requests", "requests"), ("predictions", "predictions"),
        ("shadow-predictions", "predictions.shadow"), ("feedback", "feedback"),
        ("dead-letters", "requests.dlq"), ("models", "models"), ("outcomes", "outcomes"))]
    boot = ["--bootstrap-servers", kafka_settings.bootstrap_servers]

    created = riverrun("topics", "create", "--partitions", "3", *boot, *topic_flags)
    assert created.returncode == 0, created.stderr
    assert f"requests-{suffix}: created" in created.stdout
    again = riverrun("topics", "create", *boot, *topic_flags)
    assert again.returncode == 0 and f"requests-{suffix}: exists" in again.stdout

    model_file = tmp_path / "phishing.pkl"
    trained = riverrun("train", "--dataset", "phishing", "--limit", "400", "--out", str(model_file))
    assert trained.returncode == 0, trained.stderr

    log = (tmp_path / "scorer.log").open("w")
    scorer = subprocess.Popen(
        [RIVERRUN, "--log-format", "text", "score", *boot, *topic_flags,
         "--model-file", str(model_file), "--model-name", "phishing",
         "--group-id", f"scorers-{suffix}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        replayed = riverrun("replay", *boot, *topic_flags, "--dataset", "phishing",
                            "--rate", "0", "--limit", "500", "--feedback-delay", "0",
                            "--no-progress")
        assert replayed.returncode == 0, replayed.stderr
        summary = orjson.loads(replayed.stdout.strip().splitlines()[-1])
        assert summary["requests"] == 500
        seen = read_ids(kafka_settings, f"predictions-{suffix}", 500, timeout=90)
        assert len(seen) == 500 and max(seen.values()) == 1
    finally:
        scorer.send_signal(signal.SIGTERM)
        code = scorer.wait(60)
        log.close()
    output = (tmp_path / "scorer.log").read_text()
    assert code == 0, output
    assert "Traceback" not in output


def test_bad_configuration_fails_at_start_naming_the_setting(tmp_path: Path) -> None:
    result = riverrun("score", "--model-file", str(tmp_path / "m.pkl"), "--batch-size", "0")
    assert result.returncode == 2
    assert "RIVERRUN_SCORER__BATCH_SIZE" in result.stderr and "--batch-size" in result.stderr
    result = riverrun("score", "--bootstrap-servers", " , ")
    assert result.returncode == 2 and "RIVERRUN_KAFKA__BOOTSTRAP_SERVERS" in result.stderr
    result = riverrun("score", "--model-file", str(tmp_path / "missing.pkl"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_runs_to_its_summary(tmp_path: Path) -> None:
    result = riverrun("demo", "--limit", "1500", "--rate", "1000", "--duration", "90",
                      "--out", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "summary" in result.stdout
    assert "1,500" in result.stdout  # every request scored
    assert "dead letters" in result.stdout and "NotJson 1" in result.stdout
    assert f"picture: {tmp_path / 'demo.png'}" in result.stdout
    assert (tmp_path / "demo.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_bench_prints_its_figures_as_json(kafka_settings: KafkaSettings) -> None:
    bench = riverrun("bench", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                     "--messages", "3000", "--latency-messages", "400", "--rate", "400",
                     "--latency-warmup", "1", "--predict-calls", "5", "--json", timeout=300)
    assert bench.returncode == 0, bench.stderr[-3000:]
    figures = orjson.loads(bench.stdout)
    assert figures["messages"] == 3000 and figures["latency_warmup_s"] == 1.0
    for rate in ("reference_msgs_per_s", "scorer_msgs_per_s", "exactly_once_msgs_per_s"):
        assert figures[rate] > 0, rate
    # Every timed request was answered, and every round trip made.
    assert figures["latency_messages"] == 400 and figures["predict_calls"] == 5
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
