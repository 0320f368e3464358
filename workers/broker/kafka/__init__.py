"""Apache Kafka in KRaft mode, from its own jars on Maven Central, run with Java."""

from __future__ import annotations

from riverrun.workers.broker.kafka.classpath import kafka_version, resolve_classpath
from riverrun.workers.broker.kafka.cluster import KafkaCluster, KafkaNode, start_kafka
from riverrun.workers.broker.kafka.config import (
    BrokerTls,
    NodePorts,
    node_properties,
    render_properties,
)

__all__ = [
    "BrokerTls",
    "KafkaCluster",
    "KafkaNode",
    "NodePorts",
    "kafka_version",
    "node_properties",
    "render_properties",
    "resolve_classpath",
    "start_kafka",
]
