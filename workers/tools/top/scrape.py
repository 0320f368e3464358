"""Reading the processes' `/metrics`: a pure parser and the HTTP seam around it.

An endpoint that refuses, times out or answers garbage becomes a `Scrape` with `up=False` and
the reason: a live view must keep drawing while the processes it watches come and go.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from riverrun.workers.tools.top.snapshot import Sample, Scrape

# Counters also expose `_created` (a start timestamp); nothing here is computed from it.
_SKIPPED_SUFFIXES = ("_created",)


def parse_metrics(text: str) -> tuple[Sample, ...]:
    """Every sample of a Prometheus text exposition.

    Raises:
        ValueError: the text is not the Prometheus format.

    """
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(_SKIPPED_SUFFIXES):
                continue
            samples.append(Sample(name=sample.name, labels=dict(sample.labels),
                                  value=float(sample.value)))
    return tuple(samples)


def normalise_endpoint(text: str) -> str:
    """`host:port` or a URL without a path as a full `/metrics` URL."""
    url = text.strip()
    if "://" not in url:
        url = f"http://{url}"
    scheme, _, rest = url.partition("://")
    if "/" not in rest:
        url = f"{scheme}://{rest}/metrics"
    return url


def scrape_one(endpoint: str, timeout: float, clock: Callable[[], float] = time.time) -> Scrape:
    """Fetch and parse one endpoint; never raises for an endpoint that is down or wrong."""
    at = clock()
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as response:  # noqa: S310  # operator-given metrics URL
            body = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return Scrape(endpoint=endpoint, at=at, up=False, error=f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:  # refused, timed out, unknown host, bad URL
        reason = getattr(exc, "reason", None) or exc
        return Scrape(endpoint=endpoint, at=at, up=False, error=str(reason) or type(exc).__name__)
    try:
        samples = parse_metrics(body)
    except ValueError as exc:
        return Scrape(endpoint=endpoint, at=at, up=False, error=f"not Prometheus text: {exc}")
    return Scrape(endpoint=endpoint, at=at, up=True, samples=samples)


def scrape_all(endpoints: Sequence[str], timeout: float) -> list[Scrape]:
    """Scrape every endpoint at once, so one slow endpoint delays a frame by one timeout only."""
    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(endpoints))) as pool:
        return list(pool.map(lambda url: scrape_one(url, timeout), endpoints))
