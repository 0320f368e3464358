"""The demo as a picture: rolling accuracy per version over the stream, with what changed marked.

`plot_demo` is a function of the data the demo gathered (each prediction joined with its label,
at its place in the stream) and of the registry's records; it draws with matplotlib's
object API on an Agg canvas, so nothing global is configured and no display is needed.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from riverrun.schemas import DriftDetected, PolicyChanged
from riverrun.workers.registry.records import RegistryRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# The first outcomes of a series average over a handful of labels: too noisy to draw.
_SKIP = 20


class Outcome(NamedTuple):
    """One prediction joined with its label, at its record's place in the stream."""

    position: int
    version: int
    snapshot: int
    route: str
    hit: bool


class Mark(BaseModel):
    """Something that happened at a place in the stream: a policy record or a detected drift."""

    model_config = ConfigDict(frozen=True)

    position: int = Field(ge=0)
    kind: Literal["policy", "drift"]
    label: str


class DemoTimeline(BaseModel):
    """Everything the picture shows."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    drift_at: int | None = Field(default=None, description="Where the stream's concept changes.")
    window: int = Field(default=500, ge=1, description="Predictions per rolling accuracy.")
    outcomes: list[Outcome] = Field(default_factory=list)
    marks: list[Mark] = Field(default_factory=list)


def position_at(clock: Sequence[tuple[float, int]], at: float) -> int:
    """Return how far the stream was scored by time `at`; `clock` is (time, position), by time.

    Registry records carry times and the picture's axis is the stream, so a record is drawn
    where the stream had got to when it was written.
    """
    index = bisect.bisect_right(clock, (at, float("inf")))
    return max((p for _, p in clock[:index]), default=0)


def marks_from_registry(
    records: Iterable[RegistryRecord], clock: Sequence[tuple[float, int]]
) -> list[Mark]:
    """Policy records and drift detections of the registry, placed on the stream."""
    ordered = sorted(clock)
    marks = []
    for record in records:
        if isinstance(record, PolicyChanged):
            split = ", ".join(f"v{a.version} {a.role}" for a in record.assignments)
            at = record.decided_at.timestamp()
            label = f"policy #{record.sequence} {record.strategy} by {record.decided_by}: {split}"
            marks.append(Mark(position=position_at(ordered, at), kind="policy", label=label))
        elif isinstance(record, DriftDetected):
            at = record.detected_at.timestamp()
            label = f"drift detected in v{record.version}'s {record.stream} loss"
            marks.append(Mark(position=position_at(ordered, at), kind="drift", label=label))
    return sorted(marks, key=lambda m: m.position)


def rolling_accuracy(hits: Sequence[bool], window: int) -> npt.NDArray[np.float64]:
    """Share of hits over the last `window` outcomes at each outcome (fewer at the start)."""
    if not hits:
        return np.zeros(0)
    cumulative = np.concatenate([[0.0], np.cumsum(np.asarray(hits, dtype=np.float64))])
    ends = np.arange(1, len(hits) + 1)
    starts = np.maximum(0, ends - window)
    shares: npt.NDArray[np.float64] = (cumulative[ends] - cumulative[starts]) / (ends - starts)
    return shares


def plot_demo(timeline: DemoTimeline, path: Path) -> Path:
    """Draw the timeline into a PNG at `path` (parents created); return the path."""
    from matplotlib.figure import Figure  # a second to import: only when a picture is drawn

    figure = Figure(figsize=(12, 6), dpi=110, layout="constrained")
    ax = figure.subplots()
    series: dict[tuple[int, str], list[Outcome]] = defaultdict(list)
    for outcome in sorted(timeline.outcomes):
        series[(outcome.version, outcome.route)].append(outcome)
    colours = {key: f"C{i}" for i, key in enumerate(sorted(series, key=lambda k: (-k[0], k[1])))}
    for key, outcomes in sorted(series.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        version, route = key
        # A series shorter than a few windows (a short run) gets a smaller one, to keep a shape.
        window = max(1, min(timeline.window, len(outcomes) // 4))
        accuracy = rolling_accuracy([o.hit for o in outcomes], window)
        positions = np.asarray([o.position for o in outcomes])
        snapshots = sorted({o.snapshot for o in outcomes})
        served = (f"#{snapshots[0]}" if len(snapshots) == 1
                  else f"snapshots #{snapshots[0]}–#{snapshots[-1]}")
        ax.plot(positions[_SKIP:], accuracy[_SKIP:], color=colours[key], linewidth=1.6,
                label=f"v{version} {route} ({served}, {len(outcomes):,} labelled)")
        firsts = _first_positions(outcomes)[1:]  # the first snapshot is no change
        if firsts:
            ax.plot(firsts, [0.02] * len(firsts), linestyle="none", marker="|", markersize=12,
                    color=colours[key], transform=ax.get_xaxis_transform(),
                    label=f"v{version}: a newer snapshot answers ({len(firsts)})")
    if timeline.drift_at is not None:
        ax.axvline(timeline.drift_at, color="crimson", linestyle="--", linewidth=1.4,
                   label=f"concept drift in the stream (record {timeline.drift_at:,})")
    _draw_marks(ax, timeline.marks)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0)
    ax.set_xlabel("record of the stream")
    ax.set_ylabel(f"accuracy over the last {timeline.window:,} predictions")
    ax.set_title(f"riverrun demo: {timeline.dataset}, accuracy of each version as labels arrive")
    ax.grid(alpha=0.3)
    if series or timeline.marks or timeline.drift_at is not None:
        # Raised off the axis, so the snapshot ticks along the bottom stay visible.
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 0.06), fontsize="small", framealpha=0.9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _first_positions(outcomes: Sequence[Outcome]) -> list[int]:
    """Where each snapshot of a series first answered, in stream order."""
    firsts: dict[int, int] = {}
    for outcome in outcomes:
        firsts.setdefault(outcome.snapshot, outcome.position)
    return sorted(firsts.values())


def _draw_marks(ax: Axes, marks: Sequence[Mark]) -> None:
    policies = [m for m in marks if m.kind == "policy"]
    drifts = [m for m in marks if m.kind == "drift"]
    for i, mark in enumerate(policies):
        ax.axvline(mark.position, color="dimgray", linestyle=":", linewidth=1.2,
                   label="policy record" if i == 0 else None)
        ax.annotate(mark.label, xy=(mark.position, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(4, -12 - 12 * (i % 3)), textcoords="offset points", fontsize="x-small",
                    color="dimgray")
    if drifts:
        ax.plot([m.position for m in drifts], [0.97] * len(drifts), linestyle="none",
                marker="v", markersize=7, color="black",
                transform=ax.get_xaxis_transform(),
                label=f"drift detected by the learner ({len(drifts)})")
