"""Brokers riverrun starts on one machine (Tansu, Apache Kafka KRaft) and the probes of them."""

from __future__ import annotations

from riverrun.workers.broker.check import (
    CAPABILITIES,
    BrokerCapabilities,
    Restartable,
    check_broker,
)
from riverrun.workers.broker.kafka import KafkaCluster, start_kafka
from riverrun.workers.broker.process import BrokerError, BrokerUnavailableError
from riverrun.workers.broker.tansu import TansuBroker, start_tansu

__all__ = [
    "CAPABILITIES",
    "BrokerCapabilities",
    "BrokerError",
    "BrokerUnavailableError",
    "KafkaCluster",
    "Restartable",
    "TansuBroker",
    "check_broker",
    "start_kafka",
    "start_tansu",
]
