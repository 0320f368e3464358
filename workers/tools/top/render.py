"""Drawing one `TopSnapshot` with rich: the pipe, each model's versions and decisions (no I/O)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from riverrun.workers.tools.top.snapshot import Decision, ModelStatus, TopSnapshot

_METRIC_NAMES = {"accuracy": "acc", "log_loss": "logloss", "roc_auc": "auc"}


def render(snapshot: TopSnapshot) -> RenderableType:
    """Draw the whole frame: header, endpoints, the pipe, then each model and its decisions."""
    parts: list[RenderableType] = [_header(snapshot)]
    if snapshot.endpoints:
        parts.append(_endpoints(snapshot))
    parts.append(_pipe(snapshot))
    if not snapshot.models:
        parts.append(Text("no models yet: release one with `riverrun models release`"))
    for model in snapshot.models:
        parts.append(_model(model))
        if model.decisions:
            parts.append(_decisions(model.name, model.decisions))
    return Group(*parts)


def _header(snapshot: TopSnapshot) -> Text:
    at = datetime.fromtimestamp(snapshot.taken_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    up = sum(e.up for e in snapshot.endpoints)
    text = Text()
    text.append("riverrun top", style="bold")
    text.append(f"  {at}  endpoints {up} of {len(snapshot.endpoints)} up")
    if snapshot.registry:
        text.append(f"  registry: {snapshot.registry}")
    return text


def _endpoints(snapshot: TopSnapshot) -> Table:
    table = Table(title="endpoints", title_justify="left", expand=False)
    for column in ("endpoint", "process", "state"):
        table.add_column(column)
    for endpoint in snapshot.endpoints:
        state = Text("up", style="green") if endpoint.up else Text(
            f"down ({endpoint.error})" if endpoint.error else "down", style="bold red")
        table.add_row(endpoint.endpoint, endpoint.role, state)
    return table


def _pipe(snapshot: TopSnapshot) -> Table:
    table = Table(title="pipe", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("throughput", f"{_rate(snapshot.scored_per_s)} scored "
                  f"({_count(snapshot.scored_total)} in all)")
    lag = " · ".join(f"{p.topic}[{p.partition}] {_count(p.records)}" for p in snapshot.lag)
    table.add_row("lag", f"{_count(snapshot.total_lag)} records" + (f": {lag}" if lag else "")
                  if snapshot.lag else "- (no partition reported yet)")
    latency = snapshot.latency
    table.add_row("latency p50 / p99", "-" if latency is None else (
        f"{_ms(latency.p50_s)} / {_ms(latency.p99_s)} ({latency.window}, "
        f"{_count(latency.observations)} predictions)"))
    classes = ", ".join(f"{name} {_count(n)}" for name, n in snapshot.dead_letter_classes.items())
    table.add_row("dead letters", f"{_rate(snapshot.dead_letters_per_s)} "
                  f"({_count(snapshot.dead_letters_total)} in all"
                  + (f": {classes})" if classes else ")"))
    return table


def _model(model: ModelStatus) -> Table:
    policy = (f"{model.strategy} policy #{model.policy_sequence}" if model.policy_sequence
              else "no policy: the first live version answers")
    drifts = f" · {model.drifts} drift detection{'s' if model.drifts != 1 else ''}" if (
        model.drifts) else ""
    table = Table(
        title=f"model {model.name} · {policy} · {_rate(model.scored_per_s)} scored{drifts}",
        title_justify="left",
    )
    for column, justify in (("version", "left"), ("route", "left"), ("share", "right"),
                            ("latest snapshot", "left"), ("served", "left"),
                            ("scored", "right"), ("learned", "right"),
                            ("live metrics", "left"), ("at snapshot", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]  # rich's literal
    for v in model.versions:
        latest = "-" if v.latest_snapshot is None else (
            f"#{v.latest_snapshot} · {_count(v.examples_seen or 0)} ex"
            + (f" · {_age(v.snapshot_age_s)} ago" if v.snapshot_age_s is not None else ""))
        served = ", ".join(f"#{s}" for s in v.served_snapshots) or "-"
        if v.staleness_s is not None:
            served += f" · {_age(v.staleness_s)} old"
        learned = "-" if v.examples_learned is None else (
            f"{_rate(v.examples_learned_per_s)} · {_count(v.examples_learned)}")
        table.add_row(
            f"v{v.version}", v.route or "-", _share(v.share), latest, served,
            f"{_rate(v.scored_per_s)} · {_count(v.scored_total)}", learned,
            _metrics(v.live_metrics), _metrics(v.snapshot_metrics),
        )
    return table


def _decisions(name: str, decisions: list[Decision]) -> Table:
    table = Table(title=f"{name}: recent decisions", title_justify="left")
    for column in ("#", "at (UTC)", "by", "action", "split", "reason"):
        table.add_column(column)
    for d in decisions:
        table.add_row(
            str(d.sequence), d.decided_at.astimezone(UTC).strftime("%H:%M:%S"), d.decided_by,
            f"{d.action} ({d.strategy})", ", ".join(d.assignments), d.reason or "-",
        )
    return table


def _metrics(values: dict[str, float]) -> str:
    return " ".join(f"{_METRIC_NAMES.get(k, k)} {v:.3f}" for k, v in values.items()) or "-"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-/s"
    return f"{value:,.1f}/s" if value < 100 else f"{value:,.0f}/s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _age(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
