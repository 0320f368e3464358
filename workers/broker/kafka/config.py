"""The server.properties of each node of a local Apache Kafka KRaft cluster, rendered as text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodePorts:
    """The listeners of one combined broker+controller node (a TLS one when asked for)."""

    node_id: int
    broker: int
    controller: int
    tls: int | None = None


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener beside the plaintext one: the broker's certificate chain and its
    unencrypted PKCS#8 private key, both PEM text.
    """

    certificate_chain: str
    private_key: str


def quorum_voters(nodes: list[NodePorts]) -> str:
    """Render the static `controller.quorum.voters`: id@host:port for every node."""
    return ",".join(f"{n.node_id}@127.0.0.1:{n.controller}" for n in nodes)


def node_properties(
    node: NodePorts,
    nodes: list[NodePorts],
    log_dir: Path,
    overrides: Mapping[str, str] | None = None,
    tls: BrokerTls | None = None,
) -> dict[str, str]:
    """Every server property of one node, riverrun's test-friendly defaults then `overrides`."""
    count = len(nodes)
    replication = str(min(3, count))
    min_isr = "2" if count >= 3 else "1"
    properties: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": quorum_voters(nodes),
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{node.broker},CONTROLLER://127.0.0.1:{node.controller}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        # Tests join groups constantly; the default 3 s delay would be paid on every join.
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.num.partitions": "10",
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "transaction.state.log.min.isr": min_isr,
        "num.partitions": "4",
        "auto.create.topics.enable": "true",
        # Small segments and a quick cleaner so compaction is observable in seconds.
        "log.segment.bytes": str(16 * 1024 * 1024),
        "log.retention.hours": "24",
        "log.cleaner.backoff.ms": "500",
        "log.retention.check.interval.ms": "5000",
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        # A node that comes back must rejoin the ISR quickly for the restart tests.
        "replica.lag.time.max.ms": "5000",
        "controller.quorum.election.timeout.ms": "1000",
        "controller.quorum.fetch.timeout.ms": "2000",
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "4000",
        "unclean.leader.election.enable": "false",
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
    }
    if tls is not None and node.tls is not None:
        properties["listeners"] += f",SSL://127.0.0.1:{node.tls}"
        properties["advertised.listeners"] += f",SSL://127.0.0.1:{node.tls}"
        properties["listener.security.protocol.map"] += ",SSL:SSL"
        properties["ssl.keystore.type"] = "PEM"
        properties["ssl.keystore.certificate.chain"] = tls.certificate_chain.strip()
        properties["ssl.keystore.key"] = tls.private_key.strip()
    properties.update(overrides or {})
    return properties


def render_properties(properties: Mapping[str, str]) -> str:
    """Java properties text, one `key=value` per line, in the given order."""
    return "".join(f"{key}={_escape(value)}\n" for key, value in properties.items())


def _escape(value: str) -> str:
    # Backslashes are escapes in .properties files (a Windows-style path would lose them), and
    # a value ends at a line break: PEM text goes on one line with `\n` escapes.
    return value.replace("\\", "\\\\").replace("\n", "\\n")
