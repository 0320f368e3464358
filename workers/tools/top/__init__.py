"""`riverrun top`: scrape the processes' metrics, fold them with the registry, draw a live view."""

from __future__ import annotations

from riverrun.workers.tools.top.collect import collect, histogram_quantile
from riverrun.workers.tools.top.render import render
from riverrun.workers.tools.top.scrape import (
    normalise_endpoint,
    parse_metrics,
    scrape_all,
    scrape_one,
)
from riverrun.workers.tools.top.snapshot import (
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
