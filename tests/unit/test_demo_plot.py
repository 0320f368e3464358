"""The demo's picture: rolling accuracy, marks placed on the stream, a real PNG written."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from riverrun.schemas import DriftDetected, PolicyAssignment, PolicyChanged
from riverrun.workers.tools.demo_plot import (
    DemoTimeline,
    Mark,
    Outcome,
    marks_from_registry,
    plot_demo,
    position_at,
    rolling_accuracy,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def drifting_outcomes(n: int = 4000, drift_at: int = 2000) -> list[Outcome]:
    """A learning v2 that dips at the drift and recovers, beside a frozen v1 that does not."""
    rng = random.Random(7)
    outcomes = []
    for i in range(n):
        since = i - drift_at
        learning = 0.9 if since < 0 else min(0.9, 0.5 + since / 2500)
        frozen = 0.9 if since < 0 else 0.5
        outcomes.append(Outcome(i, 2, i // 250, "champion", rng.random() < learning))
        outcomes.append(Outcome(i, 1, 0, "shadow", rng.random() < frozen))
    return outcomes


def test_rolling_accuracy_averages_the_last_window() -> None:
    shares = rolling_accuracy([True, False, True, True], window=2)
    assert shares.tolist() == pytest.approx([1.0, 0.5, 0.5, 1.0])
    assert rolling_accuracy([], window=5).size == 0


def test_times_are_placed_where_the_stream_had_got_to() -> None:
    clock = [(10.0, 0), (11.0, 100), (12.0, 90), (13.0, 300)]
    assert position_at(clock, 9.0) == 0
    assert position_at(clock, 12.5) == 100  # partitions interleave: the furthest so far
    assert position_at(clock, 13.0) == 300
    policy = PolicyChanged(
        model="m", sequence=3, strategy="shadow", decided_by="judge", decided_at=T0,
        assignments=[PolicyAssignment(version=2, role="champion"),
                     PolicyAssignment(version=1, role="shadow")])
    drift = DriftDetected(model="m", version=2, stream="learning", detector="ADWIN", position=40,
                          mean_loss=0.4, detected_at=T0 + timedelta(seconds=2))
    times = [((T0 + timedelta(seconds=s)).timestamp(), p) for s, p in ((0, 50), (1, 400))]
    marks = marks_from_registry([drift, policy], times)
    assert [(m.kind, m.position) for m in marks] == [("policy", 50), ("drift", 400)]
    assert marks[0].label == "policy #3 shadow by judge: v2 champion, v1 shadow"
    assert "v2's learning loss" in marks[1].label


def test_plot_writes_a_png_with_versions_drift_snapshots_and_policies(tmp_path: Path) -> None:
    timeline = DemoTimeline(
        dataset="agrawal-drift", drift_at=2000, window=300, outcomes=drifting_outcomes(),
        marks=[Mark(position=0, kind="policy", label="policy #1 shadow by operator: v2, v1"),
               Mark(position=2150, kind="drift", label="drift detected in v2's learning loss")],
    )  # fmt: skip
    path = plot_demo(timeline, tmp_path / "pictures" / "demo.png")
    assert path == tmp_path / "pictures" / "demo.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000  # two curves, ticks, marks and a legend: far from a blank canvas
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (12 * 110, 6 * 110)


def test_plot_of_an_empty_run_is_still_a_picture(tmp_path: Path) -> None:
    path = plot_demo(DemoTimeline(dataset="phishing"), tmp_path / "empty.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
