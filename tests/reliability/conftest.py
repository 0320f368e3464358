"""Fixtures of the reliability suite: the profile, the figures file, topics, models, processes.

Every scenario runs real processes through the CLI against a real broker (the shared `broker`
fixture), injects faults, then lets the checker read everything back. The figures each scenario
measures go to `.reliability/<profile>.json`, which RELIABILITY.md quotes.
"""

from __future__ import annotations

import json
import pickle
import platform
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from river import datasets, linear_model, optim, preprocessing

from riverrun.schemas import KafkaSettings, TopicSettings
from tests.conftest import TestBroker

from .harness.loadgen import LoadGenerator
from .harness.processes import Workers
from .profile import PROFILE

FIGURES_DIR = Path(__file__).resolve().parents[2] / ".reliability"


class Figures:
    """What each scenario measured, written out at the end of the session."""

    def __init__(self) -> None:
        self.started = time.time()
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.broker: dict[str, Any] = {}

    def record(self, scenario: str, **values: Any) -> None:
        """Merge `values` into the scenario's figures."""
        self.scenarios.setdefault(scenario, {}).update(values)

    def outcome(self, scenario: str, outcome: str, reason: str = "") -> None:
        entry = self.scenarios.setdefault(scenario, {})
        entry["outcome"] = outcome
        if reason:
            entry["reason"] = reason

    def write(self) -> Path:
        FIGURES_DIR.mkdir(exist_ok=True)
        path = FIGURES_DIR / f"{PROFILE.name}.json"
        document = {
            "profile": PROFILE.name,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "wall_seconds": round(time.time() - self.started, 1),
            "machine": {"cpus": _cpus(), "python": platform.python_version()},
            "broker": self.broker,
            "scenarios": dict(sorted(self.scenarios.items())),
        }
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """The session's figures; written to .reliability/<profile>.json at the end."""
    try:
        yield _FIGURES
    finally:
        _FIGURES.write()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if "reliability" not in {m.name for m in item.iter_markers()}:
        return
    name = item.name
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2])
        _FIGURES.outcome(name, report.outcome, reason)


@pytest.fixture(scope="session")
def conformance(broker: TestBroker, figures: Figures) -> TestBroker:
    """The broker's measured guarantees (the `riverrun broker check` probes), on record.

    Scenarios that need a guarantee the broker lacks report the figure instead of asserting.
    """
    caps = broker.capabilities
    assert caps is not None
    figures.broker = {
        "engine": broker.engine,
        "chosen_by": broker.chosen_by,
        "capabilities": {name: getattr(caps, name) for name in caps.details},
        "details": caps.details,
    }
    return broker


@pytest.fixture
def kafka(conformance: TestBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=conformance.bootstrap_servers)


def topic_names() -> TopicSettings:
    """Fresh names for every riverrun topic (nothing is created)."""
    suffix = uuid.uuid4().hex[:10]
    return TopicSettings(
        **{role: f"rel-{name}-{suffix}" for role, name in TopicSettings().all().items()}
    )


def create_topics(kafka: KafkaSettings, partitions: int, replication: int = 1,
                  names: TopicSettings | None = None) -> TopicSettings:
    """Every riverrun topic, fresh unless `names` are given; `partitions` each, the logs one."""
    names = names or topic_names()
    admin = AdminClient(kafka.client_config())
    futures = admin.create_topics([
        NewTopic(name, num_partitions=1 if role in ("examples", "models", "artifacts")
                 else partitions, replication_factor=replication)
        for role, name in names.all().items()
    ])
    for future in futures.values():
        future.result(timeout=30)
    return names


@pytest.fixture
def make_topics(kafka: KafkaSettings, conformance: TestBroker) -> Callable[..., TopicSettings]:
    """`make_topics(partitions)` on the test broker."""
    def make(partitions: int = PROFILE.partitions) -> TopicSettings:
        return create_topics(kafka, partitions, conformance.replication_factor)
    return make


@pytest.fixture(scope="session")
def phishing() -> list[tuple[dict[str, float], bool]]:
    return list(datasets.Phishing())


@pytest.fixture(scope="session")
def rows(phishing: list[tuple[dict[str, float], bool]]) -> list[dict[str, float]]:
    return [x for x, _ in phishing]


@pytest.fixture(scope="session")
def model_file(phishing: list[tuple[dict[str, float], bool]],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`StandardScaler | LogisticRegression` trained on a phishing prefix, pickled."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.05))
    for x, y in phishing[:500]:
        model.learn_one(x, y)
    path = tmp_path_factory.mktemp("models") / "phishing.pkl"
    path.write_bytes(pickle.dumps(model))
    return path


@pytest.fixture(autouse=True)
def _stop_loads() -> Iterator[None]:
    """No load generator outlives its test, whatever the test did."""
    yield
    LoadGenerator.stop_all()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Processes of this test, all stopped (each by its id) at teardown."""
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
