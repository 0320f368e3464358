"""`riverrun demo`: the whole pipe on the embedded broker, learning while it serves.

Starts Tansu, creates the topics, releases `StandardScaler | LogisticRegression` warm-started
on a prefix of a drifting stream, starts a scorer and a learner as their own processes, replays
the stream with delayed labels (and a few malformed requests), shows live progress, and ends
with a summary: the accuracy dips at the drift and recovers as snapshots roll out to the
scorer. With a baseline (the default), the same warm start is released twice: v1 stays frozen
and scores every request in shadow, v2 learns and answers, so the picture it ends with
(`demo.png`) shows what learning online is worth after the drift. This is a composition root:
with `train`, the one place in `workers/` that drives the client side (`producers/`) too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from riverrun.producers.dataset import DATASETS, describe, load
from riverrun.producers.replay import ReplaySettings, replay, request_id_for
from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.broker.process import free_port
from riverrun.workers.broker.topics import create_topics
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings
from riverrun.workers.routing.policy import deploy
from riverrun.workers.runtime.errors import RiverrunError
from riverrun.workers.tools.train import train_linear

logger = logging.getLogger(__name__)

WINDOW = 500
SPEC = "StandardScaler | LogisticRegression(optimizer=SGD(0.05))"

MALFORMED_SAMPLES = [
    b"{not json",
    b"\xff\xfe binary",
    b'{"request_id": "bad-1", "model": "nobody", "features": {"a": 1.0}}',
    b'{"request_id": "bad-2", "features": {"a": 1.0}}',
    b'{"request_id": "bad-3", "model": "%s", "features": {"a": {"nested": 1}}}',
]


@dataclass
class Tally:
    """What the demo's reader has seen on predictions and dead letters."""

    predictions: int = 0
    dead_letters: int = 0
    dead_letter_classes: dict[str, int] = field(default_factory=dict)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    recent_hits: deque[bool] = field(default_factory=lambda: deque(maxlen=500))
    hits_before_drift: list[int] = field(default_factory=lambda: [0, 0])
    hits_after_drift: list[int] = field(default_factory=lambda: [0, 0])
    rate_window: deque[tuple[float, int]] = field(default_factory=deque)
    served: set[tuple[int, int]] = field(default_factory=set)
    latest_served: tuple[int, int] = (0, 0)
    # Hits and counts per 500 records of the stream, to draw accuracy over the stream.
    windows: dict[int, list[int]] = field(default_factory=dict)
    # Every labelled prediction, shadow ones included, and when the stream got where: the picture.
    outcomes: list[tuple[int, int, int, str, bool]] = field(default_factory=list)
    clock: list[tuple[float, int]] = field(default_factory=list)

    def scored_per_second(self) -> float:
        """Predictions per second over the last few seconds."""
        now = time.monotonic()
        self.rate_window.append((now, self.predictions))
        while len(self.rate_window) > 2 and now - self.rate_window[0][0] > 3.0:
            self.rate_window.popleft()
        (t0, n0), (t1, n1) = self.rate_window[0], self.rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def _read_outputs(
    kafka: KafkaSettings,
    topics: TopicSettings,
    labels: dict[str, Any],
    drift_at: int | None,
    tally: Tally,
    stop: threading.Event,
) -> None:
    consumer = Consumer(kafka.client_config({
        "group.id": "demo-reader", "enable.auto.commit": False, "fetch.wait.max.ms": 100,
    }))
    try:
        assignment = []
        for topic in (topics.predictions, topics.dead_letters, topics.shadow_predictions):
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assignment += [TopicPartition(topic, p, 0) for p in partitions]
        consumer.assign(assignment)
        while not stop.is_set():
            for record in consumer.consume(500, 0.2):
                if record.error() is not None:
                    continue
                if record.topic() == topics.dead_letters:
                    tally.dead_letters += 1
                    headers = dict(record.headers() or [])
                    error_class = headers.get("riverrun.error.class", b"?").decode()
                    tally.dead_letter_classes[error_class] = (
                        tally.dead_letter_classes.get(error_class, 0) + 1
                    )
                    continue
                made = orjson.loads(record.value())
                if record.topic() == topics.shadow_predictions:
                    _shadow_outcome(made, labels, tally)
                    continue
                tally.predictions += 1
                tally.latencies_ms.append(made["latency_ms"])
                served = (made["version"], made["snapshot"])
                tally.served.add(served)
                tally.latest_served = max(tally.latest_served, served)
                truth = labels.get(made["request_id"])
                if truth is None:
                    continue
                index, label = truth
                hit = made["prediction"] == label
                tally.outcomes.append((index, *served, made["route"], hit))
                tally.clock.append((record.timestamp()[1] / 1000, index))
                tally.recent_hits.append(hit)
                window = tally.windows.setdefault(index // WINDOW, [0, 0])
                window[0] += hit
                window[1] += 1
                bucket = tally.hits_after_drift if drift_at and index >= drift_at else (
                    tally.hits_before_drift)
                bucket[0] += hit
                bucket[1] += 1
    finally:
        consumer.close()


def _shadow_outcome(made: dict[str, Any], labels: dict[str, Any], tally: Tally) -> None:
    """Count a shadow prediction for its version's curve only: nobody downstream saw it."""
    truth = labels.get(made["request_id"])
    if truth is not None:
        index, label = truth
        tally.outcomes.append(
            (index, made["version"], made["snapshot"], made["route"], made["prediction"] == label))


def _view(tally: Tally, sent: int, total: int, elapsed: float, duration: float) -> Table:
    table = Table(title="riverrun demo", show_header=False, min_width=48)
    latencies = list(tally.latencies_ms)
    recent = tally.recent_hits
    table.add_row("requests sent", f"{sent:,} / {total:,}")
    table.add_row("predictions", f"{tally.predictions:,}")
    table.add_row("scored per second", f"{tally.scored_per_second():,.0f}")
    table.add_row("dead letters", f"{tally.dead_letters}")
    table.add_row("latency p50 / p99", f"{_percentile(latencies, .5):.1f} / {_percentile(latencies, .99):.1f} ms")
    table.add_row("accuracy (last 500)", f"{sum(recent) / len(recent):.1%}" if recent else "-")
    version, snapshot = tally.latest_served
    table.add_row("serving", f"v{version} snapshot {snapshot} ({len(tally.served)} seen)")
    table.add_row("elapsed", f"{elapsed:.0f} s of at most {duration:.0f} s")
    return table


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo end to end and print its summary; 0 when everything stopped cleanly."""
    console = Console()
    info = describe(args.dataset)
    total = args.limit or info.length
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from riverrun.workers.broker.tansu import start_tansu

    console.print(f"[bold]riverrun demo[/]: {args.dataset} ({info.description})")
    with start_tansu() as broker, contextlib.ExitStack() as cleanup:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        topics = TopicSettings()
        console.print(f"  broker     tansu at {broker.bootstrap_servers}")
        create_topics(kafka, topics, partitions=4)
        console.print(f"  topics     {', '.join(topics.all().values())}")

        # A signing key for this run only: the processes trust each other's artifacts.
        env = {**os.environ, "RIVERRUN_REGISTRY__SIGNING_KEY": secrets.token_hex(32),
               "RIVERRUN_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        registry = Registry(kafka, topics, RegistrySettings(
            signing_key=env["RIVERRUN_REGISTRY__SIGNING_KEY"]))
        cleanup.callback(registry.close)
        model = train_linear(args.dataset, args.train, args.seed, learning_rate=0.05)
        spec = ModelSpec(pipeline=SPEC, task="binary", label_type="bool",
                         description="riverrun demo")
        if args.baseline:
            registry.release(args.dataset, spec.model_copy(
                update={"description": "riverrun demo: a frozen baseline"}), model)
        released, _ = registry.release(args.dataset, spec, model)
        console.print(f"  released   {args.dataset}@{released.version}: {SPEC}, warm-started on "
                      f"{args.train:,} records of another seed")
        if args.baseline:
            # A release takes no traffic by itself (v1, the first, would answer): the policy
            # makes v2 the champion, which answers and learns; v1 scores in shadow, pinned to
            # its first snapshot.
            policy = deploy(registry.refresh(), args.dataset, "shadow",
                            version=str(released.version), challengers=["1#0"])
            registry.publish_policy(policy)
            console.print(f"  policy     {policy.strategy}: v{released.version} answers and "
                          "learns, v1 (the same warm start, frozen) scores in shadow")

        metrics_port = free_port()
        scorer = _start(out / "scorer.log", env, cleanup,
                        ["score", "--metrics-port", str(metrics_port), "--worker-id", "demo-1"])
        console.print(f"  scorer     pid {scorer.pid}, follows the registry; metrics on "
                      f"http://127.0.0.1:{metrics_port}/metrics")
        learner = _start(out / "learner.log", env, cleanup,
                         ["learn", "--model", args.dataset, "--snapshot-interval",
                          str(args.snapshot_interval), "--worker-id", "demo-learner"])
        console.print(f"  learner    pid {learner.pid}, a snapshot every {args.snapshot_interval:g} s "
                      "while labels arrive")
        _wait_ready(metrics_port, scorer, timeout=60)

        labels = {
            request_id_for(args.dataset, args.replay_seed, i): (i, y)
            for i, (_, y) in enumerate(load(args.dataset, seed=args.replay_seed, limit=total))
        }
        tally = Tally()
        stop_reader = threading.Event()
        reader = threading.Thread(
            target=_read_outputs,
            args=(kafka, topics, labels, info.drift_at, tally, stop_reader),
            daemon=True,
        )
        reader.start()
        cleanup.callback(stop_reader.set)

        _send_malformed(kafka, topics, args.dataset)
        replay_settings = ReplaySettings(
            kafka=kafka, topics=topics,
            replay={"dataset": args.dataset, "model": args.dataset, "rate": args.rate,
                    "limit": total, "seed": args.replay_seed, "feedback_delay": 1.0,
                    "label_fraction": 1.0, "progress": False},
        )  # fmt: skip
        stop_replay = threading.Event()
        sent = [0]
        replayer = threading.Thread(
            target=lambda: replay(replay_settings, stop_replay,
                                  on_sent=lambda n: sent.__setitem__(0, n)),
            daemon=True,
        )
        started = time.monotonic()
        replayer.start()
        expected = total + len(MALFORMED_SAMPLES)
        interrupted = False
        try:
            with Live(console=console, refresh_per_second=2, transient=not console.is_terminal) as live:
                last_line = 0.0
                while True:
                    elapsed = time.monotonic() - started
                    live.update(_view(tally, sent[0], total, elapsed, args.duration))
                    if not console.is_terminal and elapsed - last_line >= 5:
                        last_line = elapsed
                        console.print(f"  progress   {sent[0]:,} sent, {tally.predictions:,} scored, "
                                      f"{tally.dead_letters} dead letters")
                    if tally.predictions + tally.dead_letters >= expected or elapsed > args.duration:
                        break
                    if scorer.poll() is not None:
                        raise RuntimeError(f"the scorer exited early; see {out / 'scorer.log'}")
                    time.sleep(0.5)
        except KeyboardInterrupt:
            interrupted = True
        # Let the last delayed labels go out before stopping the replay.
        replayer.join(3)
        stop_replay.set()
        replayer.join(30)
        elapsed = time.monotonic() - started
        exits = {}
        for name, process in (("scorer", scorer), ("learner", learner)):
            process.send_signal(signal.SIGTERM)
            exits[name] = process.wait(60)
        stop_reader.set()
        reader.join(10)
        _summary(console, tally, sent[0], elapsed, info.drift_at, exits, interrupted)
        _print_curve(console, tally, info.drift_at)
        picture = _draw(out / "demo.png", args.dataset, info.drift_at, tally, registry)
        # One unwrapped line, so that scripts and tests can read the path back.
        console.print(f"picture: {picture}", soft_wrap=True, markup=False, highlight=False)
    return 0 if not any(exits.values()) else 1


def _start(
    log_path: Path, env: dict[str, str], cleanup: contextlib.ExitStack, argv: list[str]
) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    cleanup.callback(log.close)
    process = subprocess.Popen(
        [sys.executable, "-m", "riverrun.workers.cli", "--log-format", "text", *argv],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    cleanup.callback(_stop_process, process)
    return process


def _print_curve(console: Console, tally: Tally, drift_at: int | None) -> None:
    """Accuracy per 500 records of the stream, as a bar per window."""
    console.print("accuracy over the stream (per 500 records):")
    for window in sorted(tally.windows):
        hits, count = tally.windows[window]
        if not count:
            continue
        share = hits / count
        start = window * WINDOW
        marker = " <- drift" if drift_at is not None and start <= drift_at < start + WINDOW else ""
        console.print(f"  {start:>6,} {'#' * round(share * 40):<40} {share:6.1%}{marker}")


def _wait_ready(port: int, scorer: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scorer.poll() is not None:
            raise RuntimeError("the scorer exited before becoming ready; see scorer.log")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:  # noqa: S310  # loopback
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"the scorer was not ready within {timeout:.0f} s")


def _send_malformed(kafka: KafkaSettings, topics: TopicSettings, model: str) -> None:
    producer = Producer(kafka.client_config({"enable.idempotence": True}))
    for i, sample in enumerate(MALFORMED_SAMPLES):
        value = sample.replace(b"%s", model.encode()) if b"%s" in sample else sample
        producer.produce(topics.requests, value, f"malformed-{i}".encode())
    producer.flush(10)


def _draw(
    path: Path, dataset: str, drift_at: int | None, tally: Tally, registry: Registry
) -> Path:
    """Draw rolling accuracy per version over the stream, the registry's policies and drifts."""
    from riverrun.workers.tools.demo_plot import (
        DemoTimeline,
        Outcome,
        marks_from_registry,
        plot_demo,
    )

    try:
        records = registry.refresh().history(dataset)
    except RiverrunError as exc:  # the picture still shows the curves and the stream's drift
        logger.warning("registry unreadable, policies and drift detections left out: %s", exc)
        records = []
    timeline = DemoTimeline(
        dataset=dataset, drift_at=drift_at, window=WINDOW,
        outcomes=[Outcome(*o) for o in tally.outcomes],
        marks=marks_from_registry(records, tally.clock),
    )  # fmt: skip
    return plot_demo(timeline, path)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _summary(
    console: Console,
    tally: Tally,
    sent: int,
    elapsed: float,
    drift_at: int | None,
    exits: dict[str, int],
    interrupted: bool,
) -> None:
    latencies = list(tally.latencies_ms)
    before_hits, before_n = tally.hits_before_drift
    after_hits, after_n = tally.hits_after_drift
    table = Table(title="summary" + (" (interrupted)" if interrupted else ""), show_header=False)
    table.add_row("requests sent", f"{sent:,} in {elapsed:.1f} s")
    table.add_row("predictions", f"{tally.predictions:,}")
    classes = ", ".join(f"{k} {v}" for k, v in sorted(tally.dead_letter_classes.items()))
    table.add_row("dead letters", f"{tally.dead_letters} ({classes or 'none'})")
    table.add_row("latency p50 / p99", f"{_percentile(latencies, .5):.1f} / {_percentile(latencies, .99):.1f} ms")
    if before_n:
        table.add_row("accuracy before drift", f"{before_hits / before_n:.1%} of {before_n:,}")
    if after_n:
        table.add_row(f"accuracy after drift (record {drift_at:,})", f"{after_hits / after_n:.1%} of {after_n:,}")
    frozen = [hit for index, _v, _s, route, hit in tally.outcomes
              if route == "shadow" and drift_at is not None and index >= drift_at]
    if frozen:
        table.add_row("frozen baseline after drift (shadow)",
                      f"{sum(frozen) / len(frozen):.1%} of {len(frozen):,}")
    versions = sorted(tally.served)
    table.add_row("snapshots served", f"{len(versions)} (from v{versions[0][0]}#{versions[0][1]} "
                  f"to v{versions[-1][0]}#{versions[-1][1]})" if versions else "none")
    for name, code in exits.items():
        table.add_row(f"{name} exit", "clean (SIGTERM)" if code == 0 else f"code {code}")
    console.print(table)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun demo`."""
    parser.add_argument("--dataset", default="agrawal-drift", choices=DATASETS,
                        help="Stream to replay [agrawal-drift].")
    parser.add_argument("--rate", type=float, default=500.0, help="Requests per second [500].")
    parser.add_argument("--limit", type=int, default=None, help="Records to replay [all].")
    parser.add_argument("--train", type=int, default=2000,
                        help="Records to train the first model on [2000].")
    parser.add_argument("--duration", type=float, default=90.0,
                        help="Stop after this many seconds at most [90].")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the training stream [1].")
    parser.add_argument("--snapshot-interval", type=float, default=1.0,
                        help="Seconds between the learner's snapshots [1].")
    parser.add_argument("--replay-seed", type=int, default=42, help="Seed of the replay [42].")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="Also release the warm start as a frozen v1 scored in shadow, to "
                        "compare with the learning version [on].")
    parser.add_argument("--out", default="demo-output",
                        help="Directory for the logs and the picture (demo.png).")
    parser.set_defaults(handler=run_demo)
