"""The one broker fixture for the whole suite, and factories for uuid-named topics and groups.

PROVISIONAL: picks RIVERRUN_TEST_BOOTSTRAP or starts Tansu. The full chooser (testcontainers,
Apache Kafka through Maven, Tansu) and the capability check replace this.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import KafkaSettings, TopicSettings


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings tests must not see the developer's RIVERRUN_* variables."""
    for name in list(os.environ):
        if name.startswith("RIVERRUN_") and name != "RIVERRUN_TEST_BOOTSTRAP":
            monkeypatch.delenv(name)


class TestBroker:
    """A running broker the tests talk to."""

    def __init__(self, bootstrap_servers: str, engine: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.engine = engine


@pytest.fixture(scope="session")
def broker() -> Iterator[TestBroker]:
    external = os.environ.get("RIVERRUN_TEST_BOOTSTRAP")
    if external:
        yield TestBroker(external, "external")
        return
    from workers.broker.tansu import start_tansu

    with start_tansu() as handle:
        yield TestBroker(handle.bootstrap_servers, "tansu")


@pytest.fixture
def kafka_settings(broker: TestBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap_servers)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topics(kafka_settings: KafkaSettings) -> TopicSettings:
    """A fresh set of every riverrun topic, 4 partitions each, created on the broker."""
    suffix = uuid.uuid4().hex[:10]
    names = TopicSettings(**{role: f"{name}-{suffix}" for role, name in TopicSettings().all().items()})
    admin = AdminClient(kafka_settings.client_config())
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=4, replication_factor=-1) for name in names.all().values()]
    )
    for future in futures.values():
        future.result(timeout=30)
    return names
