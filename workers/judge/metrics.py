"""The judge's Prometheus metrics, on a registry of their own (tests read fresh ones)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class JudgeMetrics:
    """Outcomes read, failures counted, decisions published, readiness."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.outcomes = Counter(
            "riverrun_judge_outcomes_total", "Outcomes read, by model.", ["model"],
            registry=self.registry,
        )
        self.errors = Counter(
            "riverrun_judge_errors_total",
            "Requests a version failed on (dead letters naming it), by model.", ["model"],
            registry=self.registry,
        )
        self.shadow_predictions = Counter(
            "riverrun_judge_shadow_predictions_total",
            "Shadow predictions held for their labels.", registry=self.registry,
        )
        self.decisions = Counter(
            "riverrun_judge_decisions_total",
            "Policy records the judge published, by model and decision (promote, rollback, "
            "reweight).", ["model", "decision"], registry=self.registry,
        )
        self.ready = Gauge(
            "riverrun_judge_ready", "1 once the tables are recovered and the judge decides.",
            registry=self.registry,
        )
