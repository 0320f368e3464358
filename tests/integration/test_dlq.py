"""`riverrun dlq` on a real broker: dead letters listed by class, and sent back once each."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from typing import Any

from riverrun.schemas import KafkaSettings, TopicSettings

from .conftest import RIVERRUN, count_so_far, produce, read_all, request_payload, wait_for


def dlq(kafka: KafkaSettings, topics: TopicSettings, *argv: str) -> subprocess.CompletedProcess[str]:
    flags = ["--bootstrap-servers", kafka.bootstrap_servers, "--topic-dead-letters",
             topics.dead_letters, "--topic-requests", topics.requests, "--topic-feedback",
             topics.feedback, "--topic-resent", topics.resent]  # fmt: skip
    return subprocess.run([RIVERRUN, "--log-format", "text", "dlq", *argv, *flags],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_dead_letters_are_listed_and_sent_back_once_each(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]],
) -> None:
    x = phishing[0][0]
    produce(kafka_settings, topics.requests, [
        *[(f"ok-{i}".encode(), request_payload(i, x)) for i in range(5)],
        *[(f"typo-{i}".encode(), request_payload(100 + i, x, model="phishnig")) for i in range(3)],
        (b"junk", b"{not json"),
    ])  # fmt: skip
    scorer = start_scorer()
    wait_for(lambda: count_so_far(kafka_settings, topics.dead_letters, timeout=1) >= 4, 90,
             "four dead letters")
    # Stopped, so that the resent requests (their model still misspelt) stay unanswered here.
    scorer.signal(signal.SIGTERM)
    assert scorer.wait(60) == 0

    listed = dlq(kafka_settings, topics, "list", "--class", "UnknownModel")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 3 and all("UnknownModel  phishnig" in line for line in lines), lines
    by_model = dlq(kafka_settings, topics, "list", "--model", "phishnig", "--json")
    assert len(by_model.stdout.strip().splitlines()) == 3

    dry = dlq(kafka_settings, topics, "resend", "--class", "UnknownModel", "--dry-run")
    assert "would resend 3 of 3" in dry.stdout, dry.stdout + dry.stderr
    sent = dlq(kafka_settings, topics, "resend", "--class", "UnknownModel")
    assert "resent 3 of 3" in sent.stdout, sent.stdout + sent.stderr
    again = dlq(kafka_settings, topics, "resend", "--class", "UnknownModel")
    assert "resent 0 of" in again.stdout and "3 sent back before" in again.stdout, again.stdout

    requests = read_all(kafka_settings, topics.requests, at_least=12)
    resent = [r for r in requests if "riverrun.resent_from" in r.headers]
    assert Counter(r.key for r in resent) == {b"typo-0": 1, b"typo-1": 1, b"typo-2": 1}
