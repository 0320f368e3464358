"""Replay of a dataset into riverrun: paced requests, then a seeded share of their labels, delayed.

The pure parts (`TokenBucket`, `feedback_mask`, `FeedbackQueue`, `request_id_for`) decide what is
sent when; `replay` is the loop that does the I/O through a `RiverrunClient`.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from riverrun.producers.client import DeliveryError, RiverrunClient
from riverrun.producers.dataset import DATASETS, Label, describe, is_file, rows
from riverrun.producers.files import ColumnType, FileOptions
from riverrun.producers.metrics import ReplayMetrics
from riverrun.schemas import KafkaSettings, RiverrunSettings, TopicSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ReplayOptions(BaseModel):
    """What to replay, how fast, and how labels follow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(
        default="phishing",
        description=f"Dataset to stream: one of {', '.join(DATASETS)}, or a CSV, JSON-lines or "
        "Parquet file (with --target).",
    )
    target: str | None = Field(default=None, description="A file's label column.")
    key: str | None = Field(
        default=None, description="A file's key column: each request's and label's Kafka key."
    )
    types: dict[str, ColumnType] = Field(
        default_factory=dict,
        description="A file's column types by name, COLUMN=number|category|date|skip "
        "(repeatable); inferred from the first rows otherwise.",
    )
    model: str | None = Field(
        default=None, description="Model name the requests ask for; the dataset name when unset."
    )
    rate: float = Field(
        default=100.0, ge=0.0, description="Requests per second; 0 sends as fast as possible."
    )
    limit: int | None = Field(
        default=None, ge=0, description="Records to send; the dataset's default length when unset."
    )
    feedback_delay: float = Field(
        default=1.0, ge=0.0, description="Seconds between a request and its label's feedback."
    )
    label_fraction: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of requests whose label is sent (0..1)."
    )
    feedback_features: bool = Field(
        default=False,
        description="Send the features with each label, so a learner needs no prediction join.",
    )
    seed: int = Field(
        default=42, description="Seeds synthetic datasets, request ids and the labelled share."
    )
    progress: bool = Field(
        default=True, description="Show a progress bar when standard error is a terminal."
    )
    flush_timeout: float = Field(
        default=30.0, gt=0.0, description="Seconds to wait for outstanding records at the end."
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Port of /metrics during the replay; off if unset.",
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if is_file(value):
            if not Path(value).is_file():
                raise ValueError(f"dataset file {value} does not exist")
            return value
        if value not in DATASETS:
            raise ValueError(f"unknown dataset {value!r}: choose one of {', '.join(DATASETS)}, "
                             "or give the path of a CSV, JSON-lines or Parquet file")
        return value

    @model_validator(mode="after")
    def _a_file_has_a_target(self) -> ReplayOptions:
        if is_file(self.dataset) and self.target is None:
            raise ValueError(f"--target must name the label column of {self.dataset}")
        return self

    @property
    def source(self) -> str:
        """The dataset's short name: a catalog name, or a file's name without its suffix."""
        return Path(self.dataset).stem if is_file(self.dataset) else self.dataset

    @property
    def file(self) -> FileOptions:
        """How a file dataset is read."""
        return FileOptions(target=self.target, key=self.key, types=self.types)

    @property
    def model_name(self) -> str:
        """The model the requests name."""
        return self.model or self.source


class ReplaySettings(RiverrunSettings):
    """Settings of `riverrun replay`: `RIVERRUN_<SECTION>__<FIELD>` or command-line flags."""

    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings, description="How to reach the Kafka cluster."
    )
    topics: TopicSettings = Field(
        default_factory=TopicSettings, description="Topic names to write requests and feedback to."
    )
    replay: ReplayOptions = Field(
        default_factory=ReplayOptions, description="What to replay and at which pace."
    )

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Mapping[str, Any]]) -> ReplaySettings:
        """Build from the environment with command-line overrides (per section) on top."""
        # pydantic-settings merges init values over the environment section by section; its
        # typed __init__ cannot express "sections as partial dicts".
        return cls(**{name: dict(values) for name, values in overrides.items()})  # type: ignore[arg-type]


class ReplaySummary(BaseModel):
    """What a replay sent, printed as one JSON line at its end."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    model: str
    requests: int = Field(description="Requests handed to Kafka.")
    feedback: int = Field(description="Labels handed to Kafka.")
    feedback_dropped: int = Field(description="Labels still waiting for their delay at a stop.")
    elapsed_s: float = Field(description="Seconds from the first request to the end of flush.")
    rate: float = Field(
        description="Achieved requests per second, from the first request to the last."
    )
    delivered: int = Field(description="Records Kafka acknowledged.")
    delivery_failures: int = Field(description="Records Kafka did not take.")
    stopped_early: bool = Field(description="A stop was asked before the dataset's end.")


def request_id_for(dataset: str, seed: int, index: int) -> str:
    """Return the request id of record `index`: the same replay always gives the same ids."""
    return f"{dataset}-{seed}-{index}"


class TokenBucket:
    """Paces sends at `rate` per second with bursts of at most `burst`; time is given, not read.

    `rate == 0` means no pacing: every token is granted at once.
    """

    def __init__(self, rate: float, burst: float = 1.0, now: float = 0.0) -> None:
        if rate < 0:
            raise ValueError(f"rate must be zero or more, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def acquire(self, now: float) -> float:
        """Take one token if there is one and return 0, else return the seconds to wait."""
        if self.rate == 0:
            return 0.0
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = max(self._updated, now)
        # Tolerance: waiting exactly the returned time must grant the token despite rounding.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate


def feedback_mask(seed: int, fraction: float) -> Iterator[bool]:
    """Endless, seeded choice of which records get their label sent, one bool per record."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label fraction must be within 0..1, got {fraction}")
    rng = random.Random(f"riverrun-feedback-{seed}")  # noqa: S311 - a reproducible sample, not a secret
    while True:
        yield rng.random() < fraction


@dataclass(frozen=True)
class _Pending(Generic[T]):
    due: float
    item: T


class FeedbackQueue(Generic[T]):
    """Labels waiting for their delay, released in the order they were queued."""

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ValueError(f"feedback delay must be zero or more, got {delay}")
        self.delay = delay
        self._pending: deque[_Pending[T]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, sent_at: float, item: T) -> None:
        """Queue an item whose request was sent at `sent_at`."""
        due = sent_at + self.delay
        if self._pending and due < self._pending[-1].due:
            # A clock that stepped back must not reorder feedback.
            due = self._pending[-1].due
        self._pending.append(_Pending(due, item))

    def next_due(self) -> float | None:
        """When the oldest item is due, None when empty."""
        return self._pending[0].due if self._pending else None

    def pop_due(self, now: float) -> list[T]:
        """Remove and return every item due at `now`, oldest first."""
        due: list[T] = []
        while self._pending and self._pending[0].due <= now:
            due.append(self._pending.popleft().item)
        return due


@dataclass(frozen=True)
class _Label:
    request_id: str
    key: str
    label: Label
    features: dict[str, float | str] | None


ProgressHook = Callable[[int], None]


def replay(
    settings: ReplaySettings,
    stop_event: threading.Event | None = None,
    *,
    on_sent: ProgressHook | None = None,
    clock: Callable[[], float] = time.monotonic,
    metrics: ReplayMetrics | None = None,
) -> ReplaySummary:
    """Stream the dataset into the requests topic and its labels into feedback; return totals.

    Stops early, flushes and returns when `stop_event` is set. `on_sent` is called with the
    number of requests sent so far after each request (the progress bar's hook).
    """
    opts = settings.replay
    stop = stop_event or threading.Event()
    model = opts.model_name
    logger.info(
        "replaying %s as model %s to %s (rate %s/s, limit %s, feedback delay %gs, fraction %g)",
        opts.dataset, model, settings.topics.requests, opts.rate or "max", opts.limit,
        opts.feedback_delay, opts.label_fraction,
    )
    bucket = TokenBucket(opts.rate, burst=max(1.0, opts.rate * 0.01), now=clock())
    queue: FeedbackQueue[_Label] = FeedbackQueue(opts.feedback_delay)
    mask = feedback_mask(opts.seed, opts.label_fraction)
    requests = feedback = 0
    failures_before_flush = 0
    undelivered = 0

    client = RiverrunClient(settings.kafka, settings.topics, warm_up=False)
    counted = metrics or ReplayMetrics()
    requests_sent = counted.requests.labels(opts.dataset)
    feedback_sent = counted.feedback.labels(opts.dataset)
    waiting = counted.feedback_waiting.labels(opts.dataset)
    counted.delivery_failures.labels(opts.dataset).set_function(lambda: client.delivery_failures)

    def send_due(now: float) -> int:
        sent = 0
        for pending in queue.pop_due(now):
            client.send_feedback(
                model, pending.request_id, pending.label,
                key=pending.key, features=pending.features,
            )
            sent += 1
        if sent:
            feedback_sent.inc(sent)
            waiting.set(len(queue))
        return sent

    started = first_sent = last_sent = clock()
    try:
        records = rows(opts.dataset, opts.seed, opts.limit, opts.file)
        for index, (features, label, row_key) in enumerate(records):
            if stop.is_set():
                break
            while not stop.is_set():
                now = clock()
                feedback += send_due(now)
                wait = bucket.acquire(now)
                if wait <= 0:
                    break
                next_due = queue.next_due()
                if next_due is not None:
                    wait = min(wait, max(0.0, next_due - now))
                stop.wait(wait)
            if stop.is_set():
                break
            rid = request_id_for(opts.source, opts.seed, index)
            key = row_key or rid  # a request, its prediction and its label share this key
            client.send_request(model, features, key=key, request_id=rid)
            requests += 1
            requests_sent.inc()
            last_sent = clock()
            if requests == 1:
                first_sent = last_sent
            if next(mask):
                queue.push(clock(), _Label(rid, key, label,
                                           features if opts.feedback_features else None))
            if on_sent is not None:
                on_sent(requests)
        while len(queue) and not stop.is_set():
            now = clock()
            feedback += send_due(now)
            next_due = queue.next_due()
            if next_due is not None:
                stop.wait(max(0.0, next_due - now))
        dropped = len(queue)
        try:
            remaining = client.flush(opts.flush_timeout)
            if remaining:
                # Still queued after the flush timeout: the broker never took them.
                undelivered = remaining
                logger.error(
                    "%d record(s) not delivered after %gs: is Kafka reachable at %s?",
                    remaining, opts.flush_timeout, settings.kafka.bootstrap_servers,
                )
        except DeliveryError as exc:
            failures_before_flush = exc.total
            logger.error("%s", exc)
    finally:
        try:
            client.close(opts.flush_timeout)
        except DeliveryError as exc:
            logger.error("%s", exc)
    elapsed = max(clock() - started, 1e-9)
    summary = ReplaySummary(
        dataset=opts.dataset,
        model=model,
        requests=requests,
        feedback=feedback,
        feedback_dropped=dropped,
        elapsed_s=round(elapsed, 3),
        rate=round((requests - 1) / max(last_sent - first_sent, 1e-9), 1) if requests > 1 else 0.0,
        delivered=client.delivered,
        delivery_failures=max(client.delivery_failures, failures_before_flush) + undelivered,
        stopped_early=stop.is_set(),
    )
    logger.info("replay done: %s", summary.model_dump(mode="json"))
    return summary


def run_with_progress(settings: ReplaySettings, stop_event: threading.Event) -> ReplaySummary:
    """`replay` with a rich progress bar on standard error, when asked and on a terminal.

    With `metrics_port` set, /metrics is served for the replay's lifetime.
    """
    metrics = ReplayMetrics()
    if settings.replay.metrics_port is not None:
        metrics.serve(settings.replay.metrics_port)
    if not (settings.replay.progress and sys.stderr.isatty()):
        return replay(settings, stop_event, metrics=metrics)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    opts = settings.replay
    info = describe(opts.dataset, opts.file)
    if opts.limit is None:
        total = info.length
    else:
        total = opts.limit if info.synthetic else min(opts.limit, info.length)
    columns: list[Any] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(f"replay {opts.dataset}", total=total, rate="")
        started = time.monotonic()

        def advance(sent: int) -> None:
            if sent % 50 == 0 or sent == total:
                elapsed = max(time.monotonic() - started, 1e-9)
                progress.update(task, completed=sent, rate=f"{sent / elapsed:,.0f}/s")

        return replay(settings, stop_event, on_sent=advance, metrics=metrics)
