"""`riverrun top`: scrape the processes' metrics, fold them with the registry, draw a live view."""

from __future__ import annotations

from workers.top.collect import collect, histogram_quantile
from workers.top.render import render
from workers.top.scrape import normalise_endpoint, parse_metrics, scrape_all, scrape_one
from workers.top.snapshot import (
    Decision,
    EndpointStatus,
    Latency,
    ModelStatus,
    PartitionLag,
    Sample,
    Scrape,
    TopSnapshot,
    VersionStatus,
)

__all__ = [
    "Decision",
    "EndpointStatus",
    "Latency",
    "ModelStatus",
    "PartitionLag",
    "Sample",
    "Scrape",
    "TopSnapshot",
    "VersionStatus",
    "collect",
    "histogram_quantile",
    "normalise_endpoint",
    "parse_metrics",
    "render",
    "scrape_all",
    "scrape_one",
]
