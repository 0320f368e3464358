"""`riverrun top` against a running scorer that follows the registry, through the CLI."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import urllib.request
from typing import Any

from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Counter

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.registry import ModelSpec, Registry, RegistrySettings, build_estimator
from riverrun.workers.runtime.health import HealthServer
from riverrun.workers.tools.top import scrape_one

from .conftest import MODEL_NAME, RIVERRUN, produce, read_all, request_payload, wait_for

KEY = "integration-test-top-key-of-32-bytes"
SPEC = ModelSpec(pipeline="StandardScaler | LogisticRegression(optimizer=SGD(0.05))",
                 task="binary", label_type="bool")
REQUESTS = 300


def keep_sending(
    kafka: KafkaSettings, topics: TopicSettings, rows: list[tuple[dict[str, float], bool]],
    stop: threading.Event,
) -> None:
    """A trickle of requests while the view runs, so its frames see a rate."""
    producer = Producer(kafka.client_config({"linger.ms": 5}))
    i = REQUESTS
    while not stop.is_set():
        producer.produce(topics.requests, request_payload(i, rows[i % len(rows)][0]),
                         f"req-{i}".encode())
        producer.poll(0)
        i += 1
        stop.wait(0.01)  # about 100 requests a second
    producer.flush(30)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:  # noqa: S310  # loopback
            return str(response.read().decode())
    except OSError:
        return ""


def test_top_shows_the_model_its_traffic_and_lag(
    kafka_settings: KafkaSettings, topics: TopicSettings, start_scorer: Any,
    phishing: list[tuple[dict[str, float], bool]], unused_tcp_port: int,
) -> None:
    estimator = build_estimator(SPEC)
    for x, y in phishing[:100]:
        estimator.learn_one(x, y)
    with Registry(kafka_settings, topics, RegistrySettings(signing_key=KEY)) as registry:
        registry.release(MODEL_NAME, SPEC, estimator)
    port = unused_tcp_port
    scorer = start_scorer("--metrics-port", str(port), "--statistics-interval-ms", "500",
                          registry=True, env={"RIVERRUN_REGISTRY__SIGNING_KEY": KEY})
    produce(kafka_settings, topics.requests, [
        (f"req-{i}".encode(), request_payload(i, phishing[i % len(phishing)][0]))
        for i in range(REQUESTS)
    ])
    assert len(read_all(kafka_settings, topics.predictions, at_least=REQUESTS, timeout=90)) >= (
        REQUESTS), scorer.output()
    # The lag gauge appears once librdkafka has reported on a committed partition.
    wait_for(lambda: "riverrun_scorer_consumer_lag_records{" in metrics_text(port), 60,
             "the scorer to report its consumer lag")

    down = f"http://127.0.0.1:{closed_port()}/metrics"  # the view shows it down
    stop = threading.Event()
    sender = threading.Thread(target=keep_sending, args=(kafka_settings, topics, phishing, stop))
    sender.start()
    try:
        result = subprocess.run(
            [RIVERRUN, "--log-format", "text", "top", "--iterations", "3", "--interval", "1",
             "--endpoint", f"http://127.0.0.1:{port}/metrics", "--endpoint", down,
             "--bootstrap-servers", kafka_settings.bootstrap_servers,
             "--topic-models", topics.models],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        stop.set()
        sender.join(30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    frames = result.stdout.split("riverrun top  ")[1:]
    assert len(frames) == 3, result.stdout
    last = frames[-1]
    assert f"model {MODEL_NAME}" in last
    assert "v1" in last and "champion" in last and "100%" in last
    pattern = re.compile(r"throughput\s*│\s*([\d,.]+)/s scored \(([\d,]+) in all\)")
    figures = [pattern.search(frame) for frame in frames[1:]]  # rates need a previous scrape
    assert all(figures), frames
    rates, totals = zip(*((float(a.replace(",", "")), float(b.replace(",", "")))
                          for a, b in (f.groups() for f in figures if f)), strict=True)
    assert min(totals) >= REQUESTS  # every request scored, as the scorer counts them
    assert max(rates) > 0  # requests kept arriving between the frames
    assert f"{topics.requests}[0]" in last and "records" in last  # lag per partition
    assert down in last and "down" in last
    assert "scorer" in last and "up" in last


def test_scrape_reads_a_live_endpoint_and_reports_a_dead_one(unused_tcp_port: int) -> None:
    registry = CollectorRegistry()
    Counter("riverrun_scorer_scored", "Predictions.", ["model", "version", "route"],
            registry=registry).labels("fraud", "1", "champion").inc(7)
    server = HealthServer(registry, is_ready=lambda: True, host="127.0.0.1").start()
    try:
        up = scrape_one(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        missing = scrape_one(f"http://127.0.0.1:{server.port}/nothing", timeout=5)
    finally:
        server.stop()
    assert up.up and up.role == "scorer"
    assert any(s.name == "riverrun_scorer_scored_total" and s.value == 7 for s in up.samples)
    assert not missing.up and missing.error == "HTTP 404"
    down = scrape_one(f"http://127.0.0.1:{unused_tcp_port}/metrics", timeout=5)
    assert not down.up and down.error
