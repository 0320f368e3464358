"""The fold behind `riverrun top`: scrapes and the registry into one `TopSnapshot` (no I/O).

Rates are differences between this frame's scrape of an endpoint and its previous one, so the
first frame shows totals only. A counter that went down belongs to a restarted process: its
whole value counts as this interval's (what Prometheus' `rate` does). Latency quantiles are
estimated from histogram buckets by linear interpolation, as `histogram_quantile` does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from riverrun.schemas import PolicyChanged
from riverrun.workers.registry.view import RegistryView
from riverrun.workers.routing.plan import PolicyError, plan_for
from riverrun.workers.tools.top.snapshot import (
    Decision,
    EndpointStatus,
    Latency,
    ModelStatus,
    PartitionLag,
    Sample,
    Scrape,
    TopSnapshot,
    VersionStatus,
)

K = TypeVar("K")

SCORED = "riverrun_scorer_scored_total"
DEAD_LETTERS = "riverrun_scorer_dead_letters_total"
LAG = "riverrun_scorer_consumer_lag_records"
LATENCY = "riverrun_scorer_end_to_end_latency_seconds"
MODEL_INFO = "riverrun_scorer_model_info"
STALENESS = "riverrun_scorer_model_staleness_seconds"
PREQUENTIAL = "riverrun_learner_prequential"
LEARNED = "riverrun_learner_examples_learned_total"

ModelVersion = tuple[str, int]


def collect(
    scrapes: Sequence[Scrape],
    previous: Mapping[str, Scrape],
    view: RegistryView | None,
    now: float,
    *,
    registry_status: str = "",
    decisions: int = 5,
) -> TopSnapshot:
    """Fold one round of scrapes (and the previous round, for rates) with the registry.

    Args:
        scrapes: this frame's scrape of every endpoint, up or down.
        previous: the last successful scrape of each endpoint, by endpoint.
        view: the registry folded so far; None when it could not be read.
        now: unix time of the frame, for snapshot ages.
        registry_status: how the registry was read, shown as is.
        decisions: how many recent policy records to keep per model.

    """
    up = [s for s in scrapes if s.up]
    scored, scored_rate = _counter(up, previous, SCORED, _model_version)
    learned, learned_rate = _counter(up, previous, LEARNED, _model_version)
    dead, dead_rate = _counter(up, previous, DEAD_LETTERS, _error_class)
    live = _live_metrics(up)
    served = _served_snapshots(up)
    staleness = _gauge_max(up, STALENESS, _model_version)

    names = set(view.models()) if view is not None else set()
    for source in (scored, learned, live, served, staleness):
        names.update(model for model, _ in source)
    models = []
    for name in sorted(names):
        versions = {v.version for v in view.versions(name)} if view is not None else set()
        for source in (scored, learned, live, served, staleness):
            versions.update(v for model, v in source if model == name)
        routes = _routes(view, name, now) if view is not None else {}
        rows = []
        for version in sorted(versions):
            key = (name, version)
            latest = view.latest_snapshot(name, version) if view is not None else None
            route, share = routes.get(version, (None, None))
            rows.append(VersionStatus(
                version=version, route=route, share=share,
                latest_snapshot=latest.snapshot if latest else None,
                examples_seen=latest.examples_seen if latest else None,
                snapshot_age_s=max(0.0, now - latest.published_at.timestamp()) if latest else None,
                snapshot_metrics=dict(latest.metrics) if latest else {},
                served_snapshots=sorted(served.get(key, ())),
                staleness_s=staleness.get(key),
                scored_total=scored.get(key, 0.0),
                scored_per_s=scored_rate.get(key, 0.0) if scored_rate is not None else None,
                live_metrics=live.get(key, {}),
                examples_learned=learned.get(key),
                examples_learned_per_s=(learned_rate.get(key) if learned_rate is not None
                                        and key in learned else None),
            ))  # fmt: skip
        policy = view.policy(name) if view is not None else None
        models.append(ModelStatus(
            name=name,
            strategy=policy.strategy if policy else "default",
            policy_sequence=policy.sequence if policy else None,
            versions=rows,
            decisions=_decisions(view, name, decisions) if view is not None else [],
            drifts=len(view.drifts(name)) if view is not None else 0,
            scored_total=sum(r.scored_total for r in rows),
            scored_per_s=(sum(v for (m, _), v in scored_rate.items() if m == name)
                          if scored_rate is not None else None),
        ))  # fmt: skip
    return TopSnapshot(
        taken_at=now,
        endpoints=[EndpointStatus(endpoint=s.endpoint, role=_role(s, previous), up=s.up,
                                  error=s.error) for s in scrapes],
        registry=registry_status,
        models=models,
        lag=_lag(up),
        latency=_latency(up, previous),
        scored_total=sum(scored.values()),
        scored_per_s=sum(scored_rate.values()) if scored_rate is not None else None,
        dead_letters_total=sum(dead.values()),
        dead_letters_per_s=sum(dead_rate.values()) if dead_rate is not None else None,
        dead_letter_classes=dict(sorted(dead.items())),
    )


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Estimate the q-quantile of cumulative `(upper bound, count)` buckets, `+Inf` last.

    None when the histogram is empty. A quantile in the `+Inf` bucket is reported as the
    highest finite bound: nothing more precise is known.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _role(scrape: Scrape, previous: Mapping[str, Scrape]) -> str:
    # A down endpoint keeps the role it had while it answered.
    if scrape.up:
        return scrape.role
    before = previous.get(scrape.endpoint)
    return before.role if before is not None else "unknown"


def _error_class(labels: Mapping[str, str]) -> str:
    return labels.get("error_class", "?")


def _model_version(labels: Mapping[str, str]) -> ModelVersion | None:
    version = labels.get("version", "")
    if "model" not in labels or not version.isdigit():
        return None
    return labels["model"], int(version)


def _named(samples: Iterable[Sample], name: str) -> Iterable[Sample]:
    return (s for s in samples if s.name == name)


def _sums(
    scrape: Scrape, name: str, key: Callable[[Mapping[str, str]], K | None]
) -> dict[K, float]:
    sums: dict[K, float] = defaultdict(float)
    for sample in _named(scrape.samples, name):
        k = key(sample.labels)
        if k is not None and math.isfinite(sample.value):
            sums[k] += sample.value
    return sums


def _counter(
    scrapes: Sequence[Scrape],
    previous: Mapping[str, Scrape],
    name: str,
    key: Callable[[Mapping[str, str]], K | None],
) -> tuple[dict[K, float], dict[K, float] | None]:
    """Totals over every endpoint, and per-second rates when some endpoint has a previous scrape."""
    totals: dict[K, float] = defaultdict(float)
    rates: dict[K, float] = defaultdict(float)
    timed = False
    for scrape in scrapes:
        current = _sums(scrape, name, key)
        for k, value in current.items():
            totals[k] += value
        before = previous.get(scrape.endpoint)
        if before is None or not before.up or before.at >= scrape.at:
            continue
        timed = True
        old = _sums(before, name, key)
        elapsed = scrape.at - before.at
        for k, value in current.items():
            delta = value - old.get(k, 0.0)
            rates[k] += (value if delta < 0 else delta) / elapsed
    return dict(totals), (dict(rates) if timed else None)


def _gauge_max(
    scrapes: Sequence[Scrape], name: str, key: Callable[[Mapping[str, str]], K | None]
) -> dict[K, float]:
    # Several scorers serve one version: the stalest (largest) is the one to act on.
    out: dict[K, float] = {}
    for scrape in scrapes:
        for sample in _named(scrape.samples, name):
            k = key(sample.labels)
            if k is not None and math.isfinite(sample.value):
                out[k] = max(sample.value, out.get(k, sample.value))
    return out


def _live_metrics(scrapes: Sequence[Scrape]) -> dict[ModelVersion, dict[str, float]]:
    out: dict[ModelVersion, dict[str, float]] = defaultdict(dict)
    for scrape in scrapes:
        for sample in _named(scrape.samples, PREQUENTIAL):
            k = _model_version(sample.labels)
            metric = sample.labels.get("metric")
            if k is not None and metric and math.isfinite(sample.value):
                out[k][metric] = sample.value
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def _served_snapshots(scrapes: Sequence[Scrape]) -> dict[ModelVersion, set[int]]:
    out: dict[ModelVersion, set[int]] = defaultdict(set)
    for scrape in scrapes:
        for sample in _named(scrape.samples, MODEL_INFO):
            k = _model_version(sample.labels)
            snapshot = sample.labels.get("snapshot", "")
            if k is not None and snapshot.isdigit() and sample.value > 0:
                out[k].add(int(snapshot))
    return out


def _lag(scrapes: Sequence[Scrape]) -> list[PartitionLag]:
    # A partition that just moved may linger in the old owner's report: keep the larger figure.
    lags: dict[tuple[str, int], float] = {}
    for scrape in scrapes:
        for sample in _named(scrape.samples, LAG):
            topic, partition = sample.labels.get("topic"), sample.labels.get("partition", "")
            if topic is None or not partition.isdigit():
                continue
            where = (topic, int(partition))
            lags[where] = max(sample.value, lags.get(where, sample.value))
    return [PartitionLag(topic=t, partition=p, records=v) for (t, p), v in sorted(lags.items())]


def _buckets(scrape: Scrape) -> dict[float, float]:
    buckets: dict[float, float] = defaultdict(float)
    for sample in _named(scrape.samples, f"{LATENCY}_bucket"):
        try:
            bound = float(sample.labels.get("le", ""))
        except ValueError:
            continue
        buckets[bound] += sample.value
    return buckets


def _latency(scrapes: Sequence[Scrape], previous: Mapping[str, Scrape]) -> Latency | None:
    """Quantiles over the last interval when requests were scored in it, else since start."""
    window: dict[float, float] = defaultdict(float)
    total: dict[float, float] = defaultdict(float)
    for scrape in scrapes:
        current = _buckets(scrape)
        for bound, count in current.items():
            total[bound] += count
        before = previous.get(scrape.endpoint)
        if before is None or before.at >= scrape.at:
            continue
        old = _buckets(before)
        restarted = any(count < old.get(bound, 0.0) for bound, count in current.items())
        for bound, count in current.items():
            window[bound] += count if restarted else count - old.get(bound, 0.0)
    for buckets, label in ((window, "last interval"), (total, "since start")):
        ordered = sorted(buckets.items())
        p50 = histogram_quantile(0.5, ordered)
        p99 = histogram_quantile(0.99, ordered)
        if p50 is not None and p99 is not None:
            return Latency(p50_s=p50, p99_s=p99, observations=ordered[-1][1],
                           window=label)
    return None


def _routes(view: RegistryView, name: str, now: float) -> dict[int, tuple[str, float]]:
    """Each version's route and share of live traffic under the current policy."""
    policy = view.policy(name)
    try:
        plan = plan_for(policy, name, view.default_version(name))
    except PolicyError:
        plan = None
    routes: dict[int, tuple[str, float]] = {}
    if plan is None:
        # A policy the scorers cannot route either: show what it asked for.
        for a in policy.assignments if policy is not None else ():
            route, share = routes.get(a.version, ("", 0.0))
            routes[a.version] = ("+".join(filter(None, (route, a.role))), share + a.weight)
        return routes
    rows = [(arm.version, arm.route, weight)
            for arm, weight in zip(plan.arms, plan.weights_at(now), strict=True)]
    rows += [(arm.version, arm.route, 0.0) for arm in plan.shadows]
    rows += [(arm.version, f"{arm.route} standby", 0.0) for arm in plan.standby]
    for version, route, weight in rows:
        before, share = routes.get(version, ("", 0.0))
        routes[version] = ("+".join(filter(None, (before, route))), share + weight)
    return routes


def _decisions(view: RegistryView, name: str, limit: int) -> list[Decision]:
    """List the latest policy records, newest first; a replayed record shows once."""
    seen: dict[int, PolicyChanged] = {}
    for record in view.history(name):
        if isinstance(record, PolicyChanged):
            seen.setdefault(record.sequence, record)
    newest = sorted(seen.values(), key=lambda p: p.sequence, reverse=True)[:max(0, limit)]
    return [
        Decision(
            sequence=p.sequence, strategy=p.strategy, action=p.action, decided_by=p.decided_by,
            decided_at=p.decided_at, reason=p.reason,
            assignments=[f"v{a.version}{f'#{a.snapshot}' if a.snapshot is not None else ''} "
                         f"{a.role} {a.weight:g}" for a in p.assignments],
        )
        for p in newest
    ]  # fmt: skip
