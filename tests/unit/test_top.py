"""`riverrun top` without a broker: parsing, the fold of scrapes and registry, the drawing."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from riverrun.schemas import (
    ArtifactRef,
    ModelVersionReleased,
    PolicyAssignment,
    PolicyChanged,
    SnapshotPublished,
)
from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.registry import RegistryView
from riverrun.workers.scorer.metrics import ScorerMetrics
from riverrun.workers.tools.top import (
    Scrape,
    TopSnapshot,
    collect,
    histogram_quantile,
    normalise_endpoint,
    parse_metrics,
    render,
)
from riverrun.workers.tools.top.command import register, settings_from

SCORER = "http://scorer:9100/metrics"
LEARNER = "http://learner:9101/metrics"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0.timestamp() + 60.0
REF = ArtifactRef(location="kafka://a/0/0?chunks=1", size=1, sha256="0" * 64, signature="00")


def scrape(endpoint: str, text: bytes | str, at: float) -> Scrape:
    body = text.decode() if isinstance(text, bytes) else text
    return Scrape(endpoint=endpoint, at=at, up=True, samples=parse_metrics(body))


def scorer_metrics() -> ScorerMetrics:
    metrics = ScorerMetrics()
    metrics.scored.labels("fraud", "1", "champion").inc(800)
    metrics.scored.labels("fraud", "2", "canary").inc(200)
    metrics.dead_letters.labels("NotJson").inc(3)
    metrics.model_info.labels("fraud", "1", "7").set(1)
    metrics.model_info.labels("fraud", "2", "3").set(1)
    metrics.end_to_end.observe_many([0.02] * 90 + [0.4] * 10)
    metrics.consumer_lag.update_from_stats(
        '{"topics": {"requests": {"partitions": {'
        '"0": {"desired": true, "consumer_lag": 5}, "1": {"desired": true, "consumer_lag": 12},'
        '"-1": {"desired": true, "consumer_lag": 99}}}}}'
    )
    return metrics


def learner_metrics() -> LearnerMetrics:
    metrics = LearnerMetrics()
    metrics.examples_learned.labels("fraud", "2").inc(400)
    metrics.prequential.labels("fraud", "2", "accuracy").set(0.91)
    metrics.prequential.labels("fraud", "2", "log_loss").set(0.25)
    return metrics


def registry() -> RegistryView:
    def snap(version: int, snapshot: int, at: float, **metrics: float) -> SnapshotPublished:
        return SnapshotPublished(model="fraud", version=version, snapshot=snapshot, artifact=REF,
                                 examples_seen=100 * snapshot, metrics=metrics,
                                 published_at=T0 + timedelta(seconds=at))

    def release(version: int) -> ModelVersionReleased:
        return ModelVersionReleased(model="fraud", version=version,
                                    spec={"pipeline": "GaussianNB"}, task="binary")

    single = PolicyChanged(
        model="fraud", sequence=1, strategy="single", decided_at=T0,
        assignments=[PolicyAssignment(version=1, role="champion")])
    canary = PolicyChanged(
        model="fraud", sequence=2, strategy="canary", decided_by="judge", action="deploy",
        reason="v2 within the margin after 500 outcomes", decided_at=T0 + timedelta(seconds=30),
        assignments=[PolicyAssignment(version=1, role="champion", weight=0.8),
                     PolicyAssignment(version=2, role="canary", weight=0.2)])
    return RegistryView([
        release(1), snap(1, 0, 0), snap(1, 7, 20, accuracy=0.88),
        release(2), snap(2, 0, 25), snap(2, 3, 50, accuracy=0.9), single, canary,
        canary,  # a replayed record is shown once
    ], history=True)  # fmt: skip


def two_rounds() -> tuple[list[Scrape], dict[str, Scrape]]:
    scorer, learner = scorer_metrics(), learner_metrics()
    before = {SCORER: scrape(SCORER, generate_latest(scorer.registry), NOW - 2.0),
              LEARNER: scrape(LEARNER, generate_latest(learner.registry), NOW - 2.0)}
    scorer.scored.labels("fraud", "1", "champion").inc(160)
    scorer.scored.labels("fraud", "2", "canary").inc(40)
    scorer.dead_letters.labels("NotJson").inc(1)
    scorer.end_to_end.observe_many([0.004] * 100)  # the last interval is much faster
    learner.examples_learned.labels("fraud", "2").inc(60)
    now = [scrape(SCORER, generate_latest(scorer.registry), NOW),
           scrape(LEARNER, generate_latest(learner.registry), NOW)]
    return now, before


def plain(snapshot: TopSnapshot) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=False, width=220).print(render(snapshot))
    return out.getvalue()


def test_parse_keeps_samples_and_drops_created_timestamps() -> None:
    samples = parse_metrics(generate_latest(scorer_metrics().registry).decode())
    names = {s.name for s in samples}
    assert "riverrun_scorer_scored_total" in names
    assert "riverrun_scorer_end_to_end_latency_seconds_bucket" in names
    assert not any(name.endswith("_created") for name in names)
    lag = {s.labels["partition"]: s.value for s in samples
           if s.name == "riverrun_scorer_consumer_lag_records"}
    assert lag == {"0": 5.0, "1": 12.0}


def test_parse_refuses_what_is_not_prometheus_text() -> None:
    with pytest.raises(ValueError):
        parse_metrics("<html>\nnot { metrics\n")


def test_endpoints_are_normalised_to_metrics_urls() -> None:
    assert normalise_endpoint("127.0.0.1:9100") == "http://127.0.0.1:9100/metrics"
    assert normalise_endpoint("http://scorer:9100") == "http://scorer:9100/metrics"
    assert normalise_endpoint(" http://a:1/custom ") == "http://a:1/custom"


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    # Beyond the last finite bound only that bound is known.
    assert histogram_quantile(0.99, [(0.1, 10.0), (float("inf"), 20.0)]) == pytest.approx(0.1)
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_collect_folds_rates_lag_latency_and_live_metrics() -> None:
    now, before = two_rounds()
    snapshot = collect(now, before, registry(), NOW)
    assert snapshot.scored_total == 1200
    assert snapshot.scored_per_s == pytest.approx(100.0)  # 200 more in 2 s
    assert snapshot.dead_letters_per_s == pytest.approx(0.5)
    assert snapshot.dead_letter_classes == {"NotJson": 4.0}
    assert [(p.topic, p.partition, p.records) for p in snapshot.lag] == [
        ("requests", 0, 5.0), ("requests", 1, 12.0)]
    assert snapshot.total_lag == 17
    latency = snapshot.latency
    assert latency is not None and latency.window == "last interval"
    assert latency.observations == 100
    assert 0.0025 < latency.p50_s <= 0.005 and latency.p99_s <= 0.005
    assert [(e.role, e.up) for e in snapshot.endpoints] == [("scorer", True), ("learner", True)]

    (fraud,) = snapshot.models
    assert (fraud.strategy, fraud.policy_sequence) == ("canary", 2)
    assert fraud.scored_per_s == pytest.approx(100.0)
    v1, v2 = fraud.versions
    assert (v1.version, v1.route, v2.version, v2.route) == (1, "champion", 2, "canary")
    assert v1.share == pytest.approx(0.8) and v2.share == pytest.approx(0.2)
    assert v1.served_snapshots == [7] and v2.served_snapshots == [3]
    assert v1.scored_per_s == pytest.approx(80.0) and v2.scored_per_s == pytest.approx(20.0)
    assert (v2.latest_snapshot, v2.examples_seen) == (3, 300)
    assert v2.snapshot_age_s == pytest.approx(10.0)
    assert v2.snapshot_metrics == {"accuracy": 0.9}
    assert v2.live_metrics == {"accuracy": 0.91, "log_loss": 0.25}
    assert v2.examples_learned == 460 and v2.examples_learned_per_s == pytest.approx(30.0)
    assert v1.examples_learned is None
    assert [(d.sequence, d.decided_by) for d in fraud.decisions] == [(2, "judge"), (1, "operator")]
    assert fraud.decisions[0].assignments == ["v1 champion 0.8", "v2 canary 0.2"]


def test_the_first_frame_has_totals_but_no_rates() -> None:
    now, _ = two_rounds()
    snapshot = collect(now, {}, registry(), NOW)
    assert snapshot.scored_total == 1200 and snapshot.scored_per_s is None
    assert snapshot.models[0].versions[0].scored_per_s is None
    latency = snapshot.latency
    assert latency is not None and latency.window == "since start"
    assert latency.observations == 200
    assert "-/s scored (1,200 in all)" in plain(snapshot)


def test_a_restarted_scorer_counts_from_zero_again() -> None:
    before_metrics, after_metrics = scorer_metrics(), ScorerMetrics()
    after_metrics.scored.labels("fraud", "1", "champion").inc(30)
    before = {SCORER: scrape(SCORER, generate_latest(before_metrics.registry), NOW - 3.0)}
    now = [scrape(SCORER, generate_latest(after_metrics.registry), NOW)]
    snapshot = collect(now, before, None, NOW)
    assert snapshot.scored_per_s == pytest.approx(10.0)  # 30 since the restart, not -970
    assert snapshot.registry == ""
    assert [m.name for m in snapshot.models] == ["fraud"]


def test_a_down_endpoint_is_shown_down_with_its_last_role() -> None:
    now, before = two_rounds()
    down = Scrape(endpoint=SCORER, at=NOW, up=False, error="[Errno 111] Connection refused")
    snapshot = collect([down, now[1]], before, registry(), NOW, registry_status="models")
    assert [(e.role, e.up) for e in snapshot.endpoints] == [("scorer", False), ("learner", True)]
    assert snapshot.lag == [] and snapshot.latency is None and snapshot.scored_total == 0
    text = plain(snapshot)
    assert "down ([Errno 111] Connection refused)" in text
    assert "endpoints 1 of 2 up" in text


def test_without_a_policy_the_first_version_answers_everything() -> None:
    view = RegistryView([
        ModelVersionReleased(model="churn", version=1, spec={}, task="binary"),
        SnapshotPublished(model="churn", version=1, snapshot=0, artifact=REF),
        ModelVersionReleased(model="churn", version=2, spec={}, task="binary"),
        SnapshotPublished(model="churn", version=2, snapshot=0, artifact=REF),
    ])  # fmt: skip
    (churn,) = collect([], {}, view, NOW).models
    assert churn.strategy == "default" and churn.policy_sequence is None
    # Version 2 was released, never deployed: version 1 keeps every request.
    assert [(v.version, v.route, v.share) for v in churn.versions] == [
        (1, "champion", 1.0), (2, None, None)]
    assert "no policy: the first live version answers" in plain(collect([], {}, view, NOW))


def test_render_shows_versions_shares_pipe_and_decisions() -> None:
    now, before = two_rounds()
    text = plain(collect(now, before, registry(), NOW, registry_status="models, 9 records"))
    assert "model fraud · canary policy #2 · 100/s scored" in text
    assert "v1" in text and "v2" in text
    assert "80%" in text and "20%" in text
    assert "#3 · 300 ex · 10.0 s ago" in text
    assert "acc 0.910 logloss 0.250" in text
    assert "requests[0] 5 · requests[1] 12" in text and "17 records" in text
    assert "NotJson 4" in text
    assert "fraud: recent decisions" in text
    assert "v2 within the margin after 500 outcomes" in text and "judge" in text
    assert "registry: models, 9 records" in text


def test_render_says_when_there_is_nothing_yet() -> None:
    assert "no models yet" in plain(collect([], {}, RegistryView(), NOW))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser)
    return parser.parse_args(argv)


def test_endpoints_come_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(parse(["--endpoint", "127.0.0.1:9100", "--endpoint",
                                    "http://127.0.0.1:9101/metrics", "--interval", "0.5"]))
    assert settings.top.endpoints == ["http://127.0.0.1:9100/metrics",
                                      "http://127.0.0.1:9101/metrics"]
    assert settings.top.interval == 0.5
    monkeypatch.setenv("RIVERRUN_TOP__ENDPOINTS", '["scorer:9100"]')
    assert settings_from(parse([])).top.endpoints == ["http://scorer:9100/metrics"]


def test_a_bad_interval_is_refused_naming_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    args = parse(["--interval", "0", "--once"])
    assert args.handler(args) == 2
    assert "RIVERRUN_TOP__INTERVAL" in caplog.text
