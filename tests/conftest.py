"""The one broker fixture for the whole suite, its measured capabilities, and uuid-name factories.

The primary broker is chosen once per run, in order: `RIVERRUN_TEST_BOOTSTRAP`, a testcontainers
Kafka when a Docker engine answers, Apache Kafka (`start_kafka`) when java and mvn answer, else
the embedded Tansu. Tests marked `smoke` that use the broker also run on Tansu, started lazily.
Each broker's guarantees are measured once (`check_broker`) and `@pytest.mark.requires(...)`
skips a test whose broker lacks one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.broker.check import BrokerCapabilities, check_broker

PRIMARY = "primary"
TANSU = "tansu"


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings tests must not see the developer's RIVERRUN_* variables."""
    for name in list(os.environ):
        if name.startswith("RIVERRUN_") and name != "RIVERRUN_TEST_BOOTSTRAP":
            monkeypatch.delenv(name)


@dataclass
class TestBroker:
    """A running broker the tests talk to, how it was chosen and what it guarantees."""

    __test__ = False  # not a test class, despite its name

    bootstrap_servers: str
    engine: str
    chosen_by: str
    handle: Any = None
    capabilities: BrokerCapabilities | None = None
    broker_count: int = 1
    stop: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def replication_factor(self) -> int:
        """What a test topic should use on this broker."""
        return min(3, self.broker_count)


# ---- choosing the primary broker -------------------------------------------------------------


def _docker_answers() -> bool:
    # Cheap first: no socket and no DOCKER_HOST means no engine, without importing docker.
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _java_and_mvn_answer() -> bool:
    for argv in (["java", "-version"], ["mvn", "-v"]):
        if shutil.which(argv[0]) is None:
            return False
        try:
            subprocess.run(argv, capture_output=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return False
    return True


@dataclass
class _Plan:
    engine: str
    chosen_by: str


def _plan_primary() -> _Plan:
    if os.environ.get("RIVERRUN_TEST_BOOTSTRAP"):
        return _Plan("external", "RIVERRUN_TEST_BOOTSTRAP is set")
    if _docker_answers():
        return _Plan("kafka", "a Docker engine answered: testcontainers Kafka")
    if _java_and_mvn_answer():
        return _Plan("kafka", "java and mvn answered: Apache Kafka from Maven Central")
    return _Plan("tansu", "no Docker engine, java or mvn: embedded Tansu")


class _BrokerPool:
    """Brokers of this run, started on first use and stopped at the end of the session."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.used: dict[str, TestBroker] = {}

    def get(self, which: str) -> TestBroker:
        key = TANSU if which == TANSU or self.plan.engine == TANSU else PRIMARY
        if key not in self.used:
            if key == PRIMARY:
                started = self._start_primary()
            elif self.plan.engine == TANSU:
                started = self._start_tansu(self.plan.chosen_by)
            else:
                started = self._start_tansu("smoke tests run on Tansu too")
            self.used[key] = started
            started.capabilities = check_broker(
                KafkaSettings(bootstrap_servers=started.bootstrap_servers),
                handle=started.handle if hasattr(started.handle, "restart") else None,
            )
        return self.used[key]

    def stop_all(self) -> None:
        for broker in self.used.values():
            with contextlib.suppress(Exception):
                broker.stop()

    def _start_primary(self) -> TestBroker:
        if self.plan.engine == "external":
            bootstrap = os.environ["RIVERRUN_TEST_BOOTSTRAP"]
            count = len(AdminClient({"bootstrap.servers": bootstrap})
                        .list_topics(timeout=15).brokers)
            return TestBroker(bootstrap, "external", self.plan.chosen_by, broker_count=count)
        if "Docker" in self.plan.chosen_by:
            with warnings.catch_warnings():
                # Older testcontainers only have testcontainers.kafka, which now warns on import.
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    from testcontainers.community.kafka import KafkaContainer
                except ImportError:
                    from testcontainers.kafka import KafkaContainer

            container = KafkaContainer().with_kraft()
            container.with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
            container.start()
            return TestBroker(container.get_bootstrap_server(), "kafka", self.plan.chosen_by,
                              handle=container, stop=container.stop)
        from riverrun.workers.broker.process import BrokerUnavailableError

        try:
            from riverrun.workers.broker.kafka import start_kafka

            cluster = start_kafka()
        except BrokerUnavailableError as exc:
            self.plan = _Plan("tansu", f"Apache Kafka unavailable ({exc}): embedded Tansu")
            return self._start_tansu(self.plan.chosen_by)
        return TestBroker(cluster.bootstrap_servers, "kafka", self.plan.chosen_by,
                          handle=cluster, broker_count=len(cluster.nodes), stop=cluster.stop)

    @staticmethod
    def _start_tansu(chosen_by: str) -> TestBroker:
        from riverrun.workers.broker.tansu import start_tansu

        handle = start_tansu()
        return TestBroker(handle.bootstrap_servers, "tansu", chosen_by, handle=handle,
                          stop=handle.stop)


_POOL: _BrokerPool | None = None


def _pool() -> _BrokerPool:
    global _POOL
    if _POOL is None:
        _POOL = _BrokerPool(_plan_primary())
    return _POOL


# ---- pytest hooks ----------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Turn SIGTERM (CI timeouts, `timeout pytest`) into an interrupt, so teardown stops brokers."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Smoke tests that use the broker run on the primary broker and on Tansu."""
    if "broker" not in metafunc.fixturenames:
        return
    primary_engine = _pool().plan.engine
    params = [PRIMARY]
    ids = [primary_engine]
    if metafunc.definition.get_closest_marker("smoke") and primary_engine != TANSU:
        params.append(TANSU)
        ids.append(TANSU)
    metafunc.parametrize("broker", params, ids=ids, indirect=True, scope="session")


def pytest_report_header(config: pytest.Config) -> list[str]:
    plan = _pool().plan
    also = "; smoke tests also on tansu" if plan.engine != TANSU else ""
    return [f"riverrun test broker: {plan.engine} ({plan.chosen_by}){also}"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _POOL is None or not _POOL.used:
        return
    terminalreporter.section("riverrun brokers")
    for broker in _POOL.used.values():
        terminalreporter.write_line(
            f"{broker.engine} at {broker.bootstrap_servers} ({broker.chosen_by})"
        )
        caps = broker.capabilities
        if caps is None:
            continue
        terminalreporter.write_line(f"  capabilities measured in {caps.seconds}s:")
        for name, detail in caps.details.items():
            value = getattr(caps, name)
            terminalreporter.write_line(f"    {name:<24} {value!s:<5} {detail}")


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _broker_pool() -> Iterator[_BrokerPool]:
    pool = _pool()
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest, _broker_pool: _BrokerPool) -> TestBroker:
    """The broker of this test: the primary one, or Tansu for the `tansu` run of a smoke test."""
    return _broker_pool.get(getattr(request, "param", PRIMARY))


@pytest.fixture(autouse=True)
def _required_capabilities(request: pytest.FixtureRequest) -> None:
    """Skip a test marked `requires(capability, ...)` when its broker lacks one."""
    wanted = [arg for mark in request.node.iter_markers("requires") for arg in mark.args]
    if not wanted:
        return
    test_broker: TestBroker = request.getfixturevalue("broker")
    caps = test_broker.capabilities
    assert caps is not None
    for capability in wanted:
        if not caps.has(capability):
            pytest.skip(f"broker {test_broker.engine} lacks {capability}: "
                        f"{caps.detail(capability)}")


@pytest.fixture
def kafka_settings(broker: TestBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap_servers)


def unique_name(prefix: str) -> str:
    """`prefix-<10 hex>`: a topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def unique() -> Callable[[str], str]:
    """`unique("group")` gives a fresh uuid-suffixed name."""
    return unique_name


@pytest.fixture
def topics(broker: TestBroker, kafka_settings: KafkaSettings) -> TopicSettings:
    """A fresh set of every riverrun topic, 4 partitions each (examples: 1), on the broker."""
    suffix = uuid.uuid4().hex[:10]
    names = TopicSettings(
        **{role: f"{name}-{suffix}" for role, name in TopicSettings().all().items()}
    )
    admin = AdminClient(kafka_settings.client_config())
    # The learner's examples log is ordered: one partition, as `riverrun topics create` makes it.
    futures = admin.create_topics([
        NewTopic(name, num_partitions=1 if role == "examples" else 4,
                 replication_factor=broker.replication_factor)
        for role, name in names.all().items()
    ])
    for future in futures.values():
        future.result(timeout=30)
    return names


@contextlib.contextmanager
def fresh_kafka(**options: Any) -> Iterator[Any]:
    """A fresh Apache Kafka cluster (`start_kafka(**options)`), or the test skipped saying why."""
    from riverrun.workers.broker.process import BrokerUnavailableError

    if not _java_and_mvn_answer():
        pytest.skip("a fresh Apache Kafka cluster needs java and mvn on PATH")
    from riverrun.workers.broker.kafka import start_kafka

    try:
        cluster = start_kafka(**options)
    except BrokerUnavailableError as exc:
        pytest.skip(f"Apache Kafka unavailable: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[Any]:
    """A fresh 3-node Apache Kafka cluster for cluster tests (skipped without java and mvn)."""
    with fresh_kafka(nodes=3) as cluster:
        yield cluster


def signal_node(cluster: Any, node_id: int, signum: signal.Signals) -> None:
    """Send a signal to one node's JVM: SIGKILL (no controlled shutdown, no flush), SIGSTOP (it
    keeps its sockets but answers nothing) or SIGCONT."""
    process = cluster.node(node_id).process
    if process is None:
        return
    if signum == signal.SIGKILL:
        process.kill()
    else:
        process.signal(signum)
