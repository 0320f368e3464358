"""riverrun's client side: the upstream client library, dataset replay and load generation."""

from __future__ import annotations

from riverrun.producers.client import (
    ClientError,
    Delivery,
    DeliveryError,
    PredictionTimeout,
    RiverrunClient,
)
from riverrun.producers.dataset import DATASETS, DatasetInfo, describe, load
from riverrun.producers.replay import ReplayOptions, ReplaySettings, ReplaySummary, replay

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
