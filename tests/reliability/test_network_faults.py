"""The broker goes away: through a proxy that black-holes, delays and resets the connections
while load runs, and before a worker starts at all. Workers never crash, readiness follows the
broker, lag comes back, and nothing acknowledged goes unanswered."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from riverrun.schemas import KafkaSettings
from riverrun.workers.broker.process import free_port
from riverrun.workers.broker.tansu import TansuBroker, start_tansu

from .conftest import Figures, create_topics, topic_names
from .harness.checker import Fault, recovery_seconds, vacuous
from .harness.loadgen import LoadGenerator, request_payload
from .harness.processes import Workers, learner_argv, scorer_argv, wait_for
from .harness.proxy import FaultProxy
from .profile import PROFILE
from .scenario import ScorerGroup, reckon, release_untrained
from .watch import Watcher

pytestmark = pytest.mark.reliability

RECOVERY_BOUND_S = 60.0


def hold(seconds: float) -> None:
    """Keep a fault in place: its duration is the point, there is nothing to wait for."""
    time.sleep(seconds)


@pytest.fixture
def proxied_broker() -> Iterator[tuple[TansuBroker, FaultProxy]]:
    """An embedded broker that tells clients to connect through a fault proxy.

    A broker advertises its own address, so a proxy in front of the shared test broker would be
    bypassed after the first metadata answer; this one advertises the proxy's port instead.
    """
    port = free_port()
    broker = start_tansu(advertised_port=port)
    # Faults cut the scorers and the learner off; the load generator and the checker keep
    # their connections.
    proxy = FaultProxy(("127.0.0.1", broker.port), port=port,
                       affects=lambda client_id: "scorer" in client_id
                       or "learner" in client_id).start()
    try:
        yield broker, proxy
    finally:
        proxy.stop()
        broker.stop()


def test_broker_outage_through_a_proxy(
    proxied_broker: tuple[TansuBroker, FaultProxy], workers: Workers, model_file: Path,
    rows: list[dict[str, float]], figures: Figures,
) -> None:
    _, proxy = proxied_broker
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{proxy.port}")
    topics = create_topics(kafka, 4)
    group = ScorerGroup(workers, kafka, topics, f"outage-{uuid.uuid4().hex[:8]}", model_file)
    for worker_id in ("a", "b"):
        group.start(worker_id)
    model = f"outage-{uuid.uuid4().hex[:6]}"
    release_untrained(kafka, topics, model)
    learner = workers.start("learner", learner_argv(kafka.bootstrap_servers, topics, model))
    group.wait_ready()
    wait_for(learner.ready, 90, "the learner to be ready")
    watched = [*group.members.values(), learner]
    watcher = Watcher(watched).start()
    steady_s = min(8.0, PROFILE.black_hole_s)  # before the first fault, and load after the last
    fault_s = {"black-hole": PROFILE.black_hole_s, "latency": 10.0, "reset": 6.0}
    planned = steady_s + sum(fault_s[f] for f in PROFILE.network_faults) + steady_s
    total = int(PROFILE.outage_rate * planned)
    load = LoadGenerator(kafka, topics.requests, request_payload(rows), total=total,
                         rate=PROFILE.outage_rate).start()
    steady_lag = 0.0
    steady_until = time.monotonic() + steady_s
    while time.monotonic() < steady_until:
        steady_lag = max(steady_lag, group.lag())
        hold(0.5)
    faults: list[Fault] = []
    windows: dict[str, tuple[float, float]] = {}
    for fault in PROFILE.network_faults:
        started = time.monotonic()
        before = proxy.stats.held_chunks, proxy.stats.resets
        if fault == "black-hole":
            proxy.black_hole()
            hold(fault_s[fault])
            proxy.heal()
            touched = proxy.stats.held_chunks - before[0]
        elif fault == "latency":
            proxy.latency(0.25)
            hold(fault_s[fault])
            proxy.heal()
            touched = 1 if proxy.stats.bytes_forwarded else 0
        else:
            touched = 0
            for _ in range(3):
                touched += proxy.reset_all()
                hold(fault_s[fault] / 3)
        windows[fault] = (started, time.monotonic())
        # The guard: the fault met live traffic, mid-stream.
        faults.append(Fault(fault, load.done if touched else 0, total))
    last_fault = time.monotonic()
    # Lag from outside (acknowledged requests not yet committed): librdkafka's own figure on
    # /metrics keeps its last value while the broker cannot be reached.
    behind: list[tuple[float, float]] = []
    while time.monotonic() - last_fault < RECOVERY_BOUND_S + 30:
        behind.append((time.monotonic(), group.lag()))
        if load.done >= total and behind[-1][1] == 0:
            break
        hold(0.5)
    load.join(300)
    group.wait_caught_up(timeout=RECOVERY_BOUND_S)
    watcher.stop()
    codes = group.stop() | {"learner": learner.stop()}

    normal = max(steady_lag, PROFILE.outage_rate)  # at most a second behind the offered load
    recovered = recovery_seconds(behind, last_fault, normal)
    hole = windows.get("black-hole")
    in_hole = watcher.between(*hole) if hole else []
    not_ready = {w.name: sum(not s.ready[w.name] for s in in_hole) for w in watched}
    ready_after = all(s.ready[n] for s in watcher.samples[-3:] for n in s.ready)
    crashed = sorted({n for s in watcher.samples for n, up in s.alive.items() if not up})
    result = reckon(kafka, topics, load.acked)
    figures.record("broker_outage", faults=list(PROFILE.network_faults),
                   black_hole_s=PROFILE.black_hole_s, offered_rate=PROFILE.outage_rate,
                   ready_after=ready_after, crashed=crashed, lag_normal=normal,
                   lag_peak=max(v for _, v in behind), lag_recovered_s=recovered,
                   not_ready_samples_in_black_hole=not_ready, **result.figures())
    assert vacuous(faults, len(PROFILE.network_faults)) == []
    assert crashed == [] and set(codes.values()) == {0}, codes
    assert result.delivery.missing == 0, result.delivery
    assert recovered is not None and recovered <= RECOVERY_BOUND_S
    assert ready_after
    if "black-hole" in windows:
        assert all(not_ready.values()), f"/readyz stayed 200 through a black-hole: {not_ready}"


def create(kafka: KafkaSettings, topics: dict[str, int]) -> None:
    """Create these topics (name: partitions) on the broker."""
    admin = AdminClient(kafka.client_config())  # kept alive until its futures resolve
    for future in admin.create_topics([NewTopic(t, num_partitions=n)
                                       for t, n in topics.items()]).values():
        future.result(timeout=30)


def test_workers_started_before_their_broker_wait_and_become_ready(
    workers: Workers, model_file: Path, rows: list[dict[str, float]], figures: Figures,
) -> None:
    port = free_port()
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    topics = topic_names()  # created once the broker is there
    model = f"early-{uuid.uuid4().hex[:6]}"
    group = ScorerGroup(workers, kafka, topics, f"early-{uuid.uuid4().hex[:8]}", model_file,
                        extra=["--kafka-option", "topic.metadata.refresh.interval.ms=1000"])
    scorer = group.start("early")
    # A registry-following scorer on requests of its own (it would answer the others twice).
    registry_topics = topics.model_copy(update={"requests": f"{topics.requests}-registry",
                                                "predictions": f"{topics.predictions}-registry"})
    registry_scorer = workers.start("registry-scorer", scorer_argv(
        kafka.bootstrap_servers, registry_topics, f"early-registry-{uuid.uuid4().hex[:8]}", "r"))
    learner = workers.start("learner", learner_argv(kafka.bootstrap_servers, topics, model))
    waiting = {scorer: "Kafka not reachable", registry_scorer: "waiting for Kafka at",
               learner: "waiting for Kafka at"}
    for worker, says in waiting.items():
        wait_for(lambda w=worker, m=says: m in w.output(), 30, f"{worker.name} to say why it waits")
        wait_for(lambda w=worker: w.probe("/livez") == 200, 30, f"{worker.name}'s /livez")
    absent_s = PROFILE.black_hole_s
    hold(absent_s)
    for worker in waiting:
        assert worker.alive() and not worker.ready(), worker.output()[-2000:]

    with start_tansu(port=port):
        # The release first, then the examples log the learner also waits for: a learner
        # started before any release is refused (it has nothing to learn).
        create(kafka, {topics.models: 1, topics.artifacts: 1})
        release_untrained(kafka, topics, model)
        create(kafka, {name: 1 if role == "examples" else 4 for role, name in topics.all().items()
                       if role not in ("models", "artifacts")})
        create(kafka, {registry_topics.requests: 4, registry_topics.predictions: 4})
        load = LoadGenerator(kafka, topics.requests, request_payload(rows), total=1_000,
                             rate=1_000).start()
        for worker in waiting:
            wait_for(worker.ready, 90, f"{worker.name} to be ready once the broker is there")
        load.join(60)
        group.wait_caught_up(timeout=60)
        result = reckon(kafka, topics, load.acked)
        codes = {w.name: w.stop() for w in waiting}
    figures.record("broker_unavailable_at_start", absent_s=absent_s,
                   messages={w.name: m for w, m in waiting.items()},
                   became_ready=sorted(w.name for w in waiting), exit_codes=codes,
                   missing=result.delivery.missing,
                   log_lines={w.name: w.output().count("\n") for w in waiting})
    assert "still trying" in scorer.output()
    assert set(codes.values()) == {0}, codes
    assert result.delivery.missing == 0, result.delivery
