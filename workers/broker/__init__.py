"""Brokers riverrun can start on one machine (Tansu, Apache Kafka KRaft) and the probes of what a broker guarantees."""

from __future__ import annotations

from workers.broker.process import BrokerError, BrokerUnavailableError
from workers.broker.tansu import TansuBroker, start_tansu

__all__ = [
    "BrokerError",
    "BrokerUnavailableError",
    "TansuBroker",
    "start_tansu",
]
