"""A paced load generator that records every request the broker acknowledged.

It runs on its own thread with its own idempotent producer (acks=all), so the oracle knows
exactly which requests the workers owe an answer: one that was never acknowledged is not owed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import Producer

from riverrun.schemas import KafkaSettings

from .checker import Request

_quiet = logging.getLogger("reliability.loadgen.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

Payload = Callable[[int], tuple[bytes, bytes | None]]


def request_payload(rows: Sequence[dict[str, Any]], prefix: str = "r",
                    model: str = "phishing") -> Payload:
    """Request i: key and id `prefix-i`, features of row i (cycled)."""
    def make(i: int) -> tuple[bytes, bytes | None]:
        rid = f"{prefix}-{i}"
        return rid.encode(), orjson.dumps(
            {"request_id": rid, "model": model, "features": rows[i % len(rows)]})
    return make


class LoadGenerator:
    """Sends `total` records at `rate` per second (0: as fast as possible) on a thread."""

    live: set[LoadGenerator] = set()  # stopped by the suite's teardown whatever a test did

    def __init__(self, kafka: KafkaSettings, topic: str, payload: Payload, *, total: int,
                 rate: float, first: int = 0) -> None:
        self.topic = topic
        self.total = total
        self.rate = rate
        self._first = first
        self._payload = payload
        self._producer = Producer(kafka.client_config({
            "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "partitioner": "murmur2_random", "logger": _quiet,
            # Ride out a broker outage: a request is retried until it is acknowledged.
            "message.timeout.ms": 300_000,
        }))  # fmt: skip
        self.acked: list[Request] = []
        self.acked_index: list[int] = []  # which record (0..total-1) each acknowledgement is
        self.ack_times: list[float] = []
        self.failures: list[str] = []
        self.sent = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)

    def start(self) -> LoadGenerator:
        """Start sending; returns self."""
        LoadGenerator.live.add(self)
        self._thread.start()
        return self

    @classmethod
    def stop_all(cls, timeout: float = 30.0) -> None:
        """Stop every generator still running and wait for its thread."""
        for load in list(cls.live):
            load.stop()
            load._thread.join(timeout)
            cls.live.discard(load)

    def stop(self) -> None:
        """Stop sending early; what was sent is still flushed."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait until everything was sent and acknowledged (or failed)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"load generator still running after {timeout}s "
                                 f"({len(self.acked)}/{self.total} acknowledged)")

    @property
    def done(self) -> int:
        """Requests acknowledged so far."""
        return len(self.acked)

    def offered_rate(self) -> float:
        """Requests acknowledged per second over the run."""
        span = (self.finished_at or time.monotonic()) - self.started_at
        return len(self.acked) / span if span > 0 else 0.0

    def _on_delivery(self, index: int, err: Any, msg: Any) -> None:
        if err is not None:
            self.failures.append(str(err))
            return
        key = msg.key()
        self.acked.append(Request(key.decode(), msg.partition(), msg.offset()))
        self.acked_index.append(index)
        self.ack_times.append(time.monotonic())

    def _run(self) -> None:
        producer = self._producer
        self.started_at = start = time.monotonic()
        for n in range(self.total):
            if self._stop.is_set():
                break
            if self.rate > 0:
                # Paced on a schedule, not per message: sleeping per record is too coarse.
                lag = start + n / self.rate - time.monotonic()
                if lag > 0.002:
                    producer.poll(lag)
                    while (wait := start + n / self.rate - time.monotonic()) > 0:
                        time.sleep(wait)
            key, value = self._payload(self._first + n)

            def on_delivery(err: Any, msg: Any, n: int = n) -> None:
                self._on_delivery(n, err, msg)

            while True:
                try:
                    producer.produce(self.topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            self.sent += 1
            producer.poll(0)
        while producer.flush(1.0):
            pass
        self.finished_at = time.monotonic()
