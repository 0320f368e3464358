"""riverrun's client: what an upstream or downstream service imports, and nothing heavier.

    from riverrun.producers import KafkaSettings, RiverrunClient

`RiverrunClient` sends prediction requests and labels and awaits predictions; the settings that
say how to reach Kafka and the topic names come along. The dataset catalog and `replay` (River,
Prometheus) are in `riverrun.producers.dataset` and `riverrun.producers.replay`, with the server
extra.
"""

from __future__ import annotations

from riverrun.producers.client import (
    ClientError,
    Delivery,
    DeliveryError,
    PredictionRefused,
    PredictionTimeout,
    RiverrunClient,
)
from riverrun.schemas import KafkaSettings, TopicSettings

__all__ = [
    "ClientError",
    "Delivery",
    "DeliveryError",
    "KafkaSettings",
    "PredictionRefused",
    "PredictionTimeout",
    "RiverrunClient",
    "TopicSettings",
]
