"""The alert rules and the Grafana dashboard query only metrics the code exports; every query is
valid PromQL; every exported name follows the project's conventions."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry, Metric

from riverrun.workers.learner.metrics import LearnerMetrics
from riverrun.workers.scorer.metrics import ScorerMetrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "riverrun.json"

# Metrics the deploy files query before the code exports them. Each line goes when its exporter
# lands (a test below fails as soon as one is exported, to keep this list honest):
NOT_YET_EXPORTED: set[str] = set()

# The series a family of each type exposes (prometheus_client's own suffixes).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}

# Grafana's own variables, replaced by what Grafana would put there.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def _judge_metrics(registry: CollectorRegistry) -> None:
    # The judge's metrics container, once it exists beside the scorer's and the learner's.
    if importlib.util.find_spec("riverrun.workers.judge") is None:
        return
    if importlib.util.find_spec("riverrun.workers.judge.metrics") is None:
        return
    container = getattr(importlib.import_module("riverrun.workers.judge.metrics"), "JudgeMetrics", None)
    if container is not None:
        container(registry)


def families() -> Iterator[Metric]:
    for build in (ScorerMetrics, LearnerMetrics, _judge_metrics):
        registry = CollectorRegistry()
        build(registry)
        yield from registry.collect()


def exported() -> set[str]:
    """Every series name the processes can expose, whether or not it has a sample yet."""
    return {family.name + suffix for family in families() for suffix in SUFFIXES[family.type]}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"]
               for target in panel.get("targets", []) if target.get("expr")]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            # label_values(metric, label) and query_result(expr) hold a selector or a query.
            inner = re.fullmatch(r"\s*\w+\((.*?)(?:,\s*\w+)?\)\s*", query)
            queries.append(inner.group(1) if inner else query)
    return queries


def as_promql(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", ".*", query)  # dashboard variables: match any


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query selects, read from its syntax tree."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:
                names.update(m.value for m in node.matchers.matchers if m.name == "__name__")

    promql_parser.walk(promql_parser.parse(as_promql(query)), visit)
    return names


QUERIES = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()] + [
    ("dashboard", query) for query in dashboard_queries()]


@pytest.mark.parametrize("query", [q for _, q in QUERIES], ids=[w for w, _ in QUERIES])
def test_every_query_is_valid_promql_selecting_metrics(query: str) -> None:
    assert metric_names(query), f"{query!r} selects no metric"


def test_every_queried_metric_is_exported() -> None:
    queried = {name for _, query in QUERIES for name in metric_names(query)}
    missing = queried - exported() - NOT_YET_EXPORTED
    assert not missing, f"queried but exported by no process: {sorted(missing)}"


def test_metrics_not_yet_exported_are_still_missing() -> None:
    landed = NOT_YET_EXPORTED & exported()
    assert not landed, f"now exported, remove from NOT_YET_EXPORTED: {sorted(landed)}"


def test_the_name_extraction_ignores_functions_labels_and_keywords() -> None:
    query = ('histogram_quantile(0.99, sum by (le, model) (rate(a_seconds_bucket{model=~"x"}[5m])))'
             ' / on (model) group_left max without (instance) (b_total offset 5m)'
             ' or absent({__name__="c_info"}) and vector(1) > bool 0')
    assert metric_names(query) == {"a_seconds_bucket", "b_total", "c_info"}
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(a_total[5m])")


def test_the_alerts_cover_what_operators_are_paged_for() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == {
        "RiverrunConsumerLagGrowing", "RiverrunDeadLetterRateHigh", "RiverrunDriftDetected",
        "RiverrunModelStale", "RiverrunSnapshotRefused", "RiverrunScorerErrors",
        "RiverrunNoReadyScorer", "RiverrunGuardrailTripped",
    }  # fmt: skip
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_the_dashboard_shows_every_part() -> None:
    panels = {panel["title"]: panel for panel in json.loads(DASHBOARD.read_text())["panels"]}
    wanted = {
        "Throughput": "riverrun_scorer_consumed_total",
        "Consumer lag per partition": "riverrun_scorer_consumer_lag_records",
        "End-to-end latency": "riverrun_scorer_end_to_end_latency_seconds_bucket",
        "Batch size": "riverrun_scorer_batch_size_records_bucket",
        "Dead letters by reason": "riverrun_scorer_dead_letters_total",
        "Snapshot in use": "riverrun_scorer_model_info",
        "Model staleness": "riverrun_scorer_model_staleness_seconds",
        "Prequential metrics per version": "riverrun_learner_prequential",
        "Judge decisions": "riverrun_judge_decisions_total",
    }
    for title, metric in wanted.items():
        selected = {n for t in panels[title]["targets"] for n in metric_names(t["expr"])}
        assert metric in selected, title
    ids = [panel["id"] for panel in panels.values()]
    assert len(ids) == len(set(ids))


def test_exported_names_follow_the_conventions() -> None:
    for family in families():
        assert re.fullmatch(r"riverrun_(scorer|learner|judge)_[a-z0-9_]+", family.name), family.name
        # prometheus_client adds _total itself; a unit belongs in the name of a histogram.
        assert not family.name.endswith("_total"), family.name
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_bytes", "_records")), family.name
