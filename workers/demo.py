"""`riverrun demo`: the whole pipe on the embedded broker, from a trained model to live scoring.

Starts Tansu, creates the topics, trains `StandardScaler | LogisticRegression` on a prefix of a
drifting stream, starts a scorer as its own process, replays the stream (with a few malformed
requests mixed in), shows live progress and ends with a summary. This is a composition root:
it is the one place in `workers/` that drives the client side (`producers/`) too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import signal
import socket
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

from producers.dataset import DATASETS, describe, load
from producers.replay import ReplaySettings, replay, request_id_for
from schemas import KafkaSettings, TopicSettings
from workers.topics import create_topics
from workers.train import train_linear

logger = logging.getLogger(__name__)

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        for topic in (topics.predictions, topics.dead_letters):
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
                tally.predictions += 1
                tally.latencies_ms.append(made["latency_ms"])
                truth = labels.get(made["request_id"])
                if truth is None:
                    continue
                index, label = truth
                hit = made["prediction"] == label
                tally.recent_hits.append(hit)
                bucket = tally.hits_after_drift if drift_at and index >= drift_at else (
                    tally.hits_before_drift)
                bucket[0] += hit
                bucket[1] += 1
    finally:
        consumer.close()


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
    table.add_row("elapsed", f"{elapsed:.0f} s of at most {duration:.0f} s")
    return table


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo end to end and print its summary; 0 when everything stopped cleanly."""
    console = Console()
    info = describe(args.dataset)
    total = args.limit or info.length
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from workers.broker.tansu import start_tansu

    console.print(f"[bold]riverrun demo[/]: {args.dataset} ({info.description})")
    with start_tansu() as broker, contextlib.ExitStack() as cleanup:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        topics = TopicSettings()
        console.print(f"  broker     tansu at {broker.bootstrap_servers}")
        create_topics(kafka, topics, partitions=4)
        console.print(f"  topics     {', '.join(topics.all().values())}")

        model = train_linear(args.dataset, args.train, args.seed)
        model_file = out / f"{args.dataset}.pkl"
        model_file.write_bytes(pickle.dumps(model))
        console.print(f"  model      StandardScaler | LogisticRegression, trained on the first "
                      f"{args.train:,} records of a separate seed ({model_file})")

        metrics_port = _free_port()
        scorer_log = (out / "scorer.log").open("wb")
        cleanup.callback(scorer_log.close)
        scorer = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "--log-format", "text", "score",
             "--bootstrap-servers", broker.bootstrap_servers, "--model-file", str(model_file),
             "--model-name", args.dataset, "--metrics-port", str(metrics_port),
             "--worker-id", "demo-1"],
            stdout=scorer_log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
        cleanup.callback(_stop_process, scorer)
        console.print(f"  scorer     pid {scorer.pid}, metrics on http://127.0.0.1:{metrics_port}/metrics")
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
        scorer.send_signal(signal.SIGTERM)
        scorer_exit = scorer.wait(60)
        stop_reader.set()
        reader.join(10)
        _summary(console, tally, sent[0], elapsed, info.drift_at, scorer_exit, interrupted)
    return 0 if scorer_exit == 0 else 1


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
    scorer_exit: int,
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
    table.add_row("scorer exit", "clean (SIGTERM: batch finished, flushed, committed)"
                  if scorer_exit == 0 else f"code {scorer_exit}")
    console.print(table)
    if after_n and before_n and after_hits / after_n < before_hits / before_n:
        console.print("A static model loses accuracy at the drift; `riverrun learn` keeps it learning.")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `riverrun demo` to the command line."""
    parser = subparsers.add_parser("demo", help="Run the whole pipe on the embedded broker.")
    parser.add_argument("--dataset", default="agrawal-drift", choices=DATASETS,
                        help="Stream to replay [agrawal-drift].")
    parser.add_argument("--rate", type=float, default=500.0, help="Requests per second [500].")
    parser.add_argument("--limit", type=int, default=None, help="Records to replay [all].")
    parser.add_argument("--train", type=int, default=2000,
                        help="Records to train the first model on [2000].")
    parser.add_argument("--duration", type=float, default=90.0,
                        help="Stop after this many seconds at most [90].")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the training stream [1].")
    parser.add_argument("--replay-seed", type=int, default=42, help="Seed of the replay [42].")
    parser.add_argument("--out", default="demo-output", help="Directory for the model and logs.")
    parser.set_defaults(handler=run_demo)
