"""The upstream client: sends prediction requests and labels, and awaits predictions on request.

Errors::

    ClientError                 root of what this client raises
    ├── DeliveryError           Kafka did not take records; disposition: retry or stop, the
    │                           caller decides (the records are listed on the error)
    ├── PredictionRefused       the request was dead-lettered (its reason is on the error);
    │                           disposition: fix the request, do not retry it as it is
    └── PredictionTimeout       no prediction arrived in time (also a `TimeoutError`);
                                disposition: retry within a bound, or check the scorers

Every record is keyed by its entity key (the request id when none is given), so a request, its
prediction and its feedback land on the same partition number of their topics.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from riverrun.schemas import (
    KafkaSettings,
    LabelObserved,
    PredictionMade,
    PredictionRequested,
    TopicSettings,
    decode,
    encode,
    utc_now,
)
from riverrun.schemas.codec import DecodeError

logger = logging.getLogger(__name__)
# librdkafka's own log lines go through logging (configure `riverrun.librdkafka`), not stderr.
LIBRDKAFKA_LOG = logging.getLogger("riverrun.librdkafka")

Label = bool | int | float | str
FeatureMap = Mapping[str, float | str]

PRODUCER_DEFAULTS: dict[str, Any] = {
    # Retries never duplicate or reorder a partition's records.
    "enable.idempotence": True,
    "acks": "all",
    # A few ms of batching buys large batches at replay rates and costs little latency.
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    # The Java client's partitioner, so records keyed here share a partition with records of the
    # same key written by any Kafka client that uses the default (murmur2) partitioner.
    "partitioner": "murmur2_random",
    # After the first metadata answer the bootstrap connection is replaced by one to the broker
    # it named; the default backoff (100 ms, jittered) held a new client's first send that long.
    "reconnect.backoff.ms": 10,
}
# predict() sends its request at once: flushing for this long skips the producer's linger, which
# would otherwise add its 5 ms to every round trip.
_SEND_NOW_S = 0.002

_MAX_LISTED_FAILURES = 100

# Errors a cluster returns while a new topic's leaders are being elected.
_SETTLING_ERRORS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }
)


class ClientError(Exception):
    """Root of the errors raised by `RiverrunClient`."""


@dataclass(frozen=True)
class Delivery:
    """The outcome of one record's delivery, as given to an `on_delivery` callback."""

    kind: Literal["request", "feedback"]
    topic: str
    key: str
    request_id: str
    partition: int | None
    offset: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True when Kafka acknowledged the record."""
        return self.error is None


class DeliveryError(ClientError):
    """Kafka did not take some records. Disposition: the caller retries them or stops."""

    def __init__(self, failures: list[Delivery], total: int) -> None:
        self.failures = failures
        self.total = total
        listed = "; ".join(
            f"{f.kind} {f.request_id} to {f.topic}: {f.error}" for f in failures[:5]
        )
        more = f" (and {total - 5} more)" if total > 5 else ""
        super().__init__(
            f"{total} record(s) were not delivered: {listed}{more}. Check that the broker is "
            "reachable and the topics exist, then send them again."
        )


class PredictionRefused(ClientError):
    """The request was dead-lettered instead of answered. Disposition: fix it, do not retry."""

    def __init__(self, request_id: str, error_class: str, reason: str) -> None:
        self.request_id = request_id
        self.error_class = error_class
        self.reason = reason
        super().__init__(f"request {request_id} was dead-lettered as {error_class}: {reason}")


class PredictionTimeout(ClientError, TimeoutError):
    """No prediction came back in time. Disposition: retry within a bound, or check scorers."""

    def __init__(self, model: str, request_id: str, topic: str, timeout: float) -> None:
        self.model = model
        self.request_id = request_id
        self.topic = topic
        self.timeout = timeout
        super().__init__(
            f"no prediction for request {request_id} of model {model!r} arrived on topic "
            f"{topic!r} within {timeout:g} s: is a scorer running for this model and reading "
            "the requests topic? Start one (`riverrun score`) or raise the timeout."
        )


class _ReplyReader:
    """One background thread reading the predictions and dead-letter topics for every pending
    `predict` call: an answer resolves it, a dead letter of its request fails it at once."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, producer: Producer, dead_letters: str | None = None
    ) -> None:
        self._topic = topic
        self._dead_letters = dead_letters
        self._producer = producer
        self._waiters: dict[str, Future[PredictionMade]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            kafka.client_config(
                {
                    # No group membership: partitions are assigned by hand. librdkafka still
                    # wants a group id, which is never joined or committed to.
                    "group.id": f"riverrun-client-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "fetch.wait.max.ms": 20,
                    "reconnect.backoff.ms": 10,  # as the client's producer (PRODUCER_DEFAULTS)
                    "logger": LIBRDKAFKA_LOG,
                }
            )
        )
        try:
            self._position_at_end()
        except BaseException:
            self._consumer.close()
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"riverrun-replies-{topic}", daemon=True
        )
        self._thread.start()

    def _position_at_end(self, deadline_s: float = 15.0) -> None:
        """Assign every partition at its high watermark, before any request is sent.

        Retries within `deadline_s` while the cluster settles (a new topic has no leader yet).
        """
        deadline = time.monotonic() + deadline_s
        backoff = 0.05
        while True:
            try:
                assignment = self._end_offsets()
                break
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and (
                    error.retriable() or error.code() in _SETTLING_ERRORS
                )
                if not retriable or time.monotonic() + backoff > deadline:
                    raise ClientError(
                        f"cannot find the end of predictions topic {self._topic!r}: {exc}. "
                        "Check the broker address and that the topic exists."
                    ) from exc
                logger.debug("end offsets of %s not ready (%s); retrying", self._topic, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        self._consumer.assign(assignment)
        logger.debug("reply reader assigned %d partitions of %s", len(assignment), self._topic)

    def _end_offsets(self) -> list[TopicPartition]:
        # The two topics' metadata only: a cluster's whole listing takes tens of milliseconds
        # once it holds a thousand topics, and a first predict() would wait for it.
        topics = {name: self._consumer.list_topics(name, timeout=10).topics.get(name)
                  for name in (self._topic, self._dead_letters) if name is not None}  # fmt: skip
        topic = topics[self._topic]
        error = topic.error if topic is not None else None
        if error is not None and error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaException(error)  # retried while the cluster settles
        if topic is None or error is not None or not topic.partitions:
            raise ClientError(
                f"predictions topic {self._topic!r} does not exist: create it or set "
                "RIVERRUN_TOPICS__PREDICTIONS to the topic the scorers write to."
            )
        assignment = []
        for name, info in topics.items():
            if info is None or info.error is not None:
                continue  # no dead-letter topic: requests that fail time out instead
            for partition in sorted(info.partitions):
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(name, partition), timeout=10
                )
                assignment.append(TopicPartition(name, partition, high))
        return assignment

    def expect(self, request_id: str) -> Future[PredictionMade]:
        """Register interest in a request id; call before the request is sent."""
        future: Future[PredictionMade] = Future()
        with self._lock:
            self._waiters[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        """Drop a waiter that gave up."""
        with self._lock:
            self._waiters.pop(request_id, None)

    def fail(self, request_id: str, exc: BaseException) -> None:
        """Fail a waiter whose request could not be delivered."""
        with self._lock:
            future = self._waiters.pop(request_id, None)
        if future is not None and not future.done():
            future.set_exception(exc)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                # Serve the producer's delivery reports too, so a failed request fails its
                # waiter at once instead of at its timeout.
                self._producer.poll(0)
                message = self._consumer.poll(0.1)
                if message is None:
                    continue
                if message.error() is not None:
                    logger.warning("reading %s failed: %s", self._topic, message.error())
                    continue
                self._answer(message)
        except Exception:
            logger.exception("the reply reader of %s stopped", self._topic)
        finally:
            self._consumer.close()

    def _answer(self, message: Message) -> None:
        if message.topic() == self._dead_letters:
            self._refuse(message)
            return
        try:
            prediction = decode(PredictionMade, message.value())
        except DecodeError as exc:
            logger.debug("skipping an unreadable record on %s: %s", self._topic, exc)
            return
        with self._lock:
            future = self._waiters.pop(prediction.request_id, None)
        if future is not None and not future.done():
            future.set_result(prediction)

    def _refuse(self, message: Message) -> None:
        try:
            request_id = orjson.loads(message.value() or b"{}").get("request_id")
        except (orjson.JSONDecodeError, AttributeError):
            return  # not a request of this client's: those are JSON objects
        if not isinstance(request_id, str):
            return
        with self._lock:
            future = self._waiters.pop(request_id, None)
        if future is None or future.done():
            return
        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in message.headers() or []}
        future.set_exception(PredictionRefused(
            request_id, headers.get("riverrun.error.class", "DeadLetter"),
            headers.get("riverrun.error.reason", "no reason given"),
        ))  # fmt: skip

    def close(self) -> None:
        """Stop the thread; pending waiters are left to time out."""
        self._stop.set()
        self._thread.join(timeout=10)


class RiverrunClient:
    """Sends requests and feedback to riverrun and awaits predictions; a context manager.

    Thread-safe: `send_request`, `send_feedback` and `predict` may be called from many threads.

    Args:
        kafka: how to reach the cluster.
        topics: topic names; the defaults match a default deployment.
        on_delivery: called with a `Delivery` for every record, from whichever thread serves
            delivery reports (`flush`, `poll`, or the reply reader); keep it short.
        producer_options: librdkafka options applied over riverrun's producer defaults.
        warm_up: open the reader of predictions in the background now, so that the first
            `predict` does not wait for it; False for a client that only sends.

    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings = TopicSettings(),  # noqa: B008 - a frozen model, safe to share
        *,
        on_delivery: Callable[[Delivery], None] | None = None,
        producer_options: Mapping[str, Any] | None = None,
        warm_up: bool = True,
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self._on_delivery = on_delivery
        options = {**PRODUCER_DEFAULTS, **(producer_options or {})}
        self._producer = Producer(kafka.client_config({"logger": LIBRDKAFKA_LOG, **options}))
        self._lock = threading.Lock()
        # Separate from `_lock`: building the reader can take seconds, and delivery reports
        # (which take `_lock`) must not wait for it.
        self._reader_lock = threading.Lock()
        self._failures: list[Delivery] = []
        self._unreported_failures = 0
        self.delivered = 0
        self.delivery_failures = 0
        self._reader: _ReplyReader | None = None
        self._closed = False
        if warm_up:
            threading.Thread(target=self._warm_up, name="riverrun-client-warm-up",
                             daemon=True).start()  # fmt: skip

    def _warm_up(self) -> None:
        try:
            self._reply_reader()
        except Exception as exc:  # noqa: BLE001  # predict() opens it again, and says why
            logger.debug("reply reader not opened in advance: %s", exc)

    def __enter__(self) -> RiverrunClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except DeliveryError as delivery:
            # Do not mask the exception already on its way out.
            logger.error("%s", delivery)

    def send_request(
        self,
        model: str,
        features: FeatureMap,
        *,
        key: str | None = None,
        request_id: str | None = None,
        context: Mapping[str, str] | None = None,
    ) -> str:
        """Send a prediction request and return its request id (a uuid4 hex when not given)."""
        rid = request_id or uuid.uuid4().hex
        event = PredictionRequested(
            request_id=rid,
            model=model,
            features=dict(features),
            key=key,
            sent_at=utc_now(),
            context=dict(context) if context is not None else None,
        )
        self._produce("request", self.topics.requests, key or rid, rid, encode(event))
        return rid

    def send_feedback(
        self,
        model: str,
        request_id: str,
        label: Label,
        *,
        key: str | None = None,
        features: FeatureMap | None = None,
    ) -> None:
        """Send the true label of an earlier request."""
        event = LabelObserved(
            request_id=request_id,
            model=model,
            label=label,
            key=key,
            features=dict(features) if features is not None else None,
        )
        self._produce(
            "feedback", self.topics.feedback, key or request_id, request_id, encode(event)
        )

    def predict(
        self,
        model: str,
        features: FeatureMap,
        *,
        key: str | None = None,
        timeout: float = 10.0,
    ) -> PredictionMade:
        """Send a request and wait for its prediction.

        Raises:
            PredictionTimeout: no prediction within `timeout` seconds.
            PredictionRefused: the request was dead-lettered; the error says why.
            DeliveryError: the request itself could not be delivered.

        """
        reader = self._reply_reader()
        rid = uuid.uuid4().hex
        future = reader.expect(rid)
        try:
            self.send_request(model, features, key=key, request_id=rid)
        except BaseException:
            reader.forget(rid)
            raise
        self._producer.flush(_SEND_NOW_S)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            reader.forget(rid)
            raise PredictionTimeout(model, rid, self.topics.predictions, timeout) from None

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding records; returns how many are still queued after `timeout`.

        Raises:
            DeliveryError: some records sent since the last flush were not delivered.

        """
        remaining = int(self._producer.flush(timeout))
        with self._lock:
            failures, total = self._failures, self._unreported_failures
            self._failures, self._unreported_failures = [], 0
        if total:
            raise DeliveryError(failures, total)
        return remaining

    def close(self, timeout: float = 30.0) -> None:
        """Flush, stop the reply reader; nothing sent is lost without an exception.

        Raises:
            DeliveryError: some records were not delivered: they failed, or were still queued
                after `timeout` (then they are withdrawn, and listed as not delivered).

        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._producer.flush(timeout):
                # Still queued: withdraw them, so that their reports say so, and raise below.
                self._producer.purge()
                self._producer.flush(min(timeout, 5.0))
            self.flush(0)
        finally:
            # Not under `_reader_lock`: a reader being opened (by the warm-up) may take seconds
            # against a broker that is down; it closes itself when it finds the client closed.
            with self._lock:
                reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()

    def _reply_reader(self) -> _ReplyReader:
        with self._reader_lock:
            if self._closed:
                raise ClientError("the client is closed: create a new RiverrunClient")
            reader = self._reader
            if reader is None:
                reader = _ReplyReader(self.kafka, self.topics.predictions, self._producer,
                                      self.topics.dead_letters)  # fmt: skip
                with self._lock:
                    closed = self._closed
                    if not closed:
                        self._reader = reader
                if closed:
                    reader.close()
                    raise ClientError("the client is closed: create a new RiverrunClient")
            return reader

    def _produce(
        self,
        kind: Literal["request", "feedback"],
        topic: str,
        key: str,
        request_id: str,
        value: bytes,
    ) -> None:
        if self._closed:
            raise ClientError("the client is closed: create a new RiverrunClient")

        def report(err: KafkaError | None, msg: Message) -> None:
            self._delivered(kind, topic, key, request_id, err, msg)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key.encode(), on_delivery=report)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise ClientError(f"cannot send a {kind} to {topic!r}: {exc}") from exc
        self._producer.poll(0)

    def _delivered(
        self,
        kind: Literal["request", "feedback"],
        topic: str,
        key: str,
        request_id: str,
        err: KafkaError | None,
        msg: Message,
    ) -> None:
        delivery = Delivery(
            kind=kind,
            topic=topic,
            key=key,
            request_id=request_id,
            partition=msg.partition() if err is None else None,
            offset=msg.offset() if err is None else None,
            error=None if err is None else f"{err.name()}: {err.str()}",
        )
        with self._lock:
            if err is None:
                self.delivered += 1
            else:
                self.delivery_failures += 1
                self._unreported_failures += 1
                if len(self._failures) < _MAX_LISTED_FAILURES:
                    self._failures.append(delivery)
            reader = self._reader
        if err is not None:
            logger.warning("%s %s to %s not delivered: %s", kind, request_id, topic, delivery.error)
            if kind == "request" and reader is not None:
                reader.fail(request_id, DeliveryError([delivery], 1))
        if self._on_delivery is not None:
            try:
                self._on_delivery(delivery)
            except Exception:
                logger.exception("the on_delivery callback raised; ignoring it")
