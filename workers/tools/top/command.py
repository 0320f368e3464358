"""`riverrun top`: a live view of the pipe, refreshed in the terminal.

Each frame scrapes every `--endpoint` at once, folds the scrapes with the registry (followed on
the `models` topic in the background) and draws the result. On a terminal the frame is redrawn
in place; in a pipe, frames are printed one after another as plain text.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import KafkaException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console
from rich.live import Live

from riverrun.schemas import (
    KafkaSettings,
    RiverrunSettings,
    TopicSettings,
    add_section_flags,
    collect_section_flags,
)
from riverrun.schemas.settings import explain
from riverrun.workers.registry.client import RegistryFollower, read_registry
from riverrun.workers.registry.records import RegistryRecord
from riverrun.workers.registry.view import RegistryView
from riverrun.workers.runtime.errors import RiverrunError
from riverrun.workers.tools.top.collect import collect
from riverrun.workers.tools.top.render import render
from riverrun.workers.tools.top.scrape import normalise_endpoint, scrape_all
from riverrun.workers.tools.top.snapshot import Scrape

logger = logging.getLogger(__name__)

# Wide enough for a model's row on one line when the output is a file or a pipe.
_PLAIN_WIDTH = 180


class TopOptions(BaseModel):
    """What `riverrun top` watches and how often (`RIVERRUN_TOP__<FIELD>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoints: list[str] = Field(
        default_factory=list,
        description="Metrics URLs of scorers, learners and the judge, e.g. "
        "http://127.0.0.1:9100/metrics (`--endpoint`, repeated; env: a JSON list).",
    )
    interval: float = Field(default=2.0, gt=0, le=3600, description="Seconds between frames.")
    scrape_timeout: float = Field(
        default=1.0, gt=0, le=60, description="Seconds an endpoint has to answer before it is "
        "shown as down.",
    )
    decisions: int = Field(
        default=5, ge=0, le=100, description="Recent policy decisions shown per model."
    )

    @field_validator("endpoints")
    @classmethod
    def _full_urls(cls, value: list[str]) -> list[str]:
        urls = [normalise_endpoint(v) for v in value if v.strip()]
        return list(dict.fromkeys(urls))  # one scrape per endpoint, in the order given


class TopSettings(RiverrunSettings):
    """Settings of `riverrun top`."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    top: TopOptions = Field(default_factory=TopOptions)


class RegistryWatch:
    """The registry as a follower reads it; a follower that died is replaced at the next frame."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings) -> None:
        self._kafka = kafka
        self._topics = topics
        self._lock = threading.Lock()
        self._view = RegistryView(history=True)
        self._records = 0
        self._follower: RegistryFollower | None = None
        self._last_error = ""

    def _apply(self, record: RegistryRecord) -> None:
        with self._lock:
            self._view.apply(record)
            self._records += 1

    def _ensure_following(self) -> None:
        follower = self._follower
        if follower is not None and follower.is_alive():
            return
        if follower is not None and follower.error is not None:
            self._last_error = str(follower.error)
        # A fresh follower reads from the beginning, so it starts from an empty view.
        with self._lock:
            self._view = RegistryView(history=True)
            self._records = 0
        self._follower = RegistryFollower(self._kafka, self._topics, self._apply).start()

    @contextlib.contextmanager
    def reading(self) -> Iterator[tuple[RegistryView, str]]:
        """Hold the view still while the caller reads it; yield it with a word on its state."""
        self._ensure_following()
        with self._lock:
            if self._records:
                status = f"{self._topics.models}, {self._records:,} records"
            elif self._last_error:
                status = f"unavailable ({self._last_error})"
            else:
                status = f"reading {self._topics.models}"
            yield self._view, status

    def stop(self) -> None:
        """Stop following."""
        if self._follower is not None:
            # A daemon thread: one stuck on a dead broker ends with the process.
            self._follower.stop(timeout=2.0)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun top`."""
    parser.add_argument(
        "--endpoint", dest="endpoints", action="append", default=None, metavar="URL",
        help="A metrics endpoint to scrape (repeat for each scorer, learner, judge). "
        "[env RIVERRUN_TOP__ENDPOINTS, a JSON list]",
    )  # fmt: skip
    add_section_flags(parser, "top", TopOptions, only=("interval", "scrape_timeout", "decisions"))
    parser.add_argument("--iterations", type=int, default=None,
                        help="Draw this many frames, then stop [until interrupted].")
    parser.add_argument("--once", action="store_true", help="Draw one frame and stop.")
    add_section_flags(parser, "kafka", KafkaSettings)
    add_section_flags(parser, "topics", TopicSettings)
    parser.set_defaults(handler=run_top)


def settings_from(args: argparse.Namespace) -> TopSettings:
    """Build the settings of a `riverrun top` command line (flags over environment)."""
    overrides: dict[str, Any] = collect_section_flags(args)
    if args.endpoints:
        overrides.setdefault("top", {})["endpoints"] = args.endpoints
    return TopSettings(**overrides)


def run_top(args: argparse.Namespace) -> int:
    """Draw frames until interrupted, or `--iterations` of them; 0 unless the settings are bad."""
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        logger.error("bad configuration: %s", explain(exc))
        return 2
    iterations: int | None = 1 if args.once else args.iterations
    if iterations is not None and iterations < 1:
        logger.error("--iterations must be 1 or more, not %d", iterations)
        return 2
    if not settings.top.endpoints:
        logger.warning("no --endpoint given: only the registry is shown")
    # The terminal belongs to the view: librdkafka's own connection errors would tear it, and
    # the header already says when the registry cannot be read. The user's options still win.
    quiet = settings.kafka.model_copy(
        update={"extra": {"log_level": "2", **settings.kafka.extra}})
    settings = settings.model_copy(update={"kafka": quiet})
    tty = sys.stdout.isatty()
    console = Console() if tty else Console(force_terminal=False, width=_PLAIN_WIDTH,
                                            highlight=False)
    try:
        if iterations == 1:
            _draw_once(console, settings)
        else:
            _draw_live(console, settings, iterations, tty)
    except KeyboardInterrupt:
        pass  # the way to leave a live view
    return 0


def _draw_once(console: Console, settings: TopSettings) -> None:
    scrapes = scrape_all(settings.top.endpoints, settings.top.scrape_timeout)
    try:
        view: RegistryView | None = RegistryView(
            read_registry(settings.kafka, settings.topics.models, timeout=10.0), history=True)
        status = settings.topics.models
    except (RiverrunError, KafkaException) as exc:
        view, status = None, f"unavailable ({exc})"
    console.print(render(collect(scrapes, {}, view, time.time(), registry_status=status,
                                 decisions=settings.top.decisions)))


def _draw_live(
    console: Console, settings: TopSettings, iterations: int | None, tty: bool
) -> None:
    options = settings.top
    watch = RegistryWatch(settings.kafka, settings.topics)
    previous: dict[str, Scrape] = {}
    pause = threading.Event()  # never set: waits out the interval, Ctrl-C still interrupts
    frames = itertools.count() if iterations is None else range(iterations)
    with contextlib.ExitStack() as stack:
        stack.callback(watch.stop)
        live = (stack.enter_context(Live(console=console, auto_refresh=False))
                if tty else None)
        next_frame = time.monotonic()
        for index in frames:
            if index:
                next_frame += options.interval
                pause.wait(max(0.0, next_frame - time.monotonic()))
            scrapes = scrape_all(options.endpoints, options.scrape_timeout)
            with watch.reading() as (view, status):
                snapshot = collect(scrapes, previous, view, time.time(), registry_status=status,
                                   decisions=options.decisions)
            previous.update({s.endpoint: s for s in scrapes if s.up})
            frame = render(snapshot)
            if live is not None:
                live.update(frame, refresh=True)
            else:
                if index:
                    console.print()
                console.print(frame)
