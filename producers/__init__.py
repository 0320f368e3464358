"""riverrun's client side: the upstream client library, dataset replay and load generation."""

from __future__ import annotations

from producers.client import (
    ClientError,
    Delivery,
    DeliveryError,
    PredictionTimeout,
    RiverrunClient,
)
from producers.dataset import DATASETS, DatasetInfo, describe, load
from producers.replay import ReplayOptions, ReplaySettings, ReplaySummary, replay

__all__ = [
    "DATASETS",
    "ClientError",
    "DatasetInfo",
    "Delivery",
    "DeliveryError",
    "PredictionTimeout",
    "ReplayOptions",
    "ReplaySettings",
    "ReplaySummary",
    "RiverrunClient",
    "describe",
    "load",
    "replay",
]
