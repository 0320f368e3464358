from __future__ import annotations

import itertools

import pytest

from riverrun.producers.cli import register
from riverrun.producers.replay import (
    FeedbackQueue,
    ReplaySettings,
    TokenBucket,
    feedback_mask,
    request_id_for,
)


def send_times(bucket: TokenBucket, count: int, start: float = 0.0) -> list[float]:
    """Drive the bucket with a fake clock that sleeps exactly as long as it is told."""
    now = start
    times = []
    for _ in range(count):
        while (wait := bucket.acquire(now)) > 0:
            now += wait
        times.append(now)
    return times


def test_token_bucket_paces_at_the_rate() -> None:
    times = send_times(TokenBucket(rate=100.0, burst=1.0), 101)
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(1.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == pytest.approx(0.01) for g in gaps)


def test_token_bucket_allows_a_bounded_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0)
    times = send_times(bucket, 15)
    assert times[:5] == [0.0] * 5
    assert times[-1] == pytest.approx(1.0)


def test_token_bucket_does_not_bank_idle_time_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2.0)
    send_times(bucket, 3)
    times = send_times(bucket, 4, start=100.0)
    assert times[:2] == [100.0, 100.0]
    assert times[2] == pytest.approx(100.1)


def test_rate_zero_never_waits() -> None:
    bucket = TokenBucket(rate=0.0)
    assert all(bucket.acquire(0.0) == 0.0 for _ in range(10_000))


def test_token_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=-1.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(rate=1.0, burst=0.5)


def test_feedback_mask_is_seeded_and_near_the_fraction() -> None:
    first = list(itertools.islice(feedback_mask(42, 0.5), 10_000))
    assert first == list(itertools.islice(feedback_mask(42, 0.5), 10_000))
    assert first != list(itertools.islice(feedback_mask(43, 0.5), 10_000))
    assert 4_700 < sum(first) < 5_300


def test_feedback_mask_extremes() -> None:
    assert all(itertools.islice(feedback_mask(1, 1.0), 1000))
    assert not any(itertools.islice(feedback_mask(1, 0.0), 1000))
    with pytest.raises(ValueError, match="fraction"):
        next(feedback_mask(1, 1.5))


def test_feedback_queue_releases_after_the_delay_in_order() -> None:
    queue: FeedbackQueue[str] = FeedbackQueue(delay=0.5)
    queue.push(0.0, "a")
    queue.push(0.1, "b")
    queue.push(0.2, "c")
    assert queue.next_due() == pytest.approx(0.5)
    assert queue.pop_due(0.49) == []
    assert queue.pop_due(0.6) == ["a", "b"]
    assert len(queue) == 1
    assert queue.pop_due(10.0) == ["c"]
    assert queue.next_due() is None


def test_feedback_queue_keeps_order_when_the_clock_steps_back() -> None:
    queue: FeedbackQueue[int] = FeedbackQueue(delay=1.0)
    queue.push(5.0, 1)
    queue.push(4.0, 2)
    assert queue.pop_due(5.9) == []
    assert queue.pop_due(6.0) == [1, 2]


def test_zero_delay_releases_at_once() -> None:
    queue: FeedbackQueue[int] = FeedbackQueue(delay=0.0)
    queue.push(3.0, 1)
    assert queue.pop_due(3.0) == [1]


def test_request_ids_are_deterministic() -> None:
    assert request_id_for("phishing", 42, 7) == "phishing-42-7"


def parse(argv: list[str]) -> ReplaySettings:
    import argparse

    from riverrun.schemas import collect_section_flags

    parser = argparse.ArgumentParser()
    register(parser)
    args = parser.parse_args(argv)
    return ReplaySettings.from_overrides(collect_section_flags(args))


def test_flags_become_settings() -> None:
    settings = parse(
        [
            "--dataset", "sea-drift", "--model", "fraud", "--rate", "0", "--limit", "10",
            "--feedback-delay", "0.25", "--label-fraction", "0.3", "--seed", "9",
            "--no-progress", "--bootstrap-servers", "kafka:9093", "--topic-requests", "rq",
        ]
    )
    opts = settings.replay
    assert (opts.dataset, opts.model_name, opts.rate, opts.limit) == ("sea-drift", "fraud", 0, 10)
    assert (opts.feedback_delay, opts.label_fraction, opts.seed) == (0.25, 0.3, 9)
    assert opts.progress is False
    assert settings.kafka.bootstrap_servers == "kafka:9093"
    assert settings.topics.requests == "rq"
    assert settings.topics.feedback == "feedback"


def test_environment_is_read_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERRUN_REPLAY__RATE", "7")
    monkeypatch.setenv("RIVERRUN_REPLAY__DATASET", "bananas")
    monkeypatch.setenv("RIVERRUN_KAFKA__BOOTSTRAP_SERVERS", "env-host:9092")
    settings = parse(["--dataset", "sea"])
    assert settings.replay.rate == 7
    assert settings.replay.dataset == "sea"
    assert settings.replay.model_name == "sea"
    assert settings.kafka.bootstrap_servers == "env-host:9092"


def test_unknown_dataset_names_the_valid_ones() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="phishing"):
        parse(["--dataset", "nope"])


def test_every_replay_field_is_described() -> None:
    for section in ReplaySettings.model_fields.values():
        assert section.description
    from riverrun.producers.replay import ReplayOptions

    for field in ReplayOptions.model_fields.values():
        assert field.description
