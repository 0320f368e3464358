"""Model artifacts: the bytes of a snapshot and where they live (Kafka by default, or files).

`KafkaArtifactStore` keeps a deployment down to Kafka alone: an artifact is split into chunks
(512 KiB by default, under every broker's default message limit), produced in order to one
partition of a compacted topic, and found again by `kafka://<topic>/<partition>/<first-offset>
?chunks=N&id=<artifact id>`. Reading assigns that partition at that offset (no consumer group)
and collects exactly the N chunks carrying that id; chunks of another artifact written at the
same moment by another producer are skipped, not mixed in.
"""

from __future__ import annotations

import logging
import os
import pickle
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from riverrun.schemas import KafkaSettings, TopicSettings
from riverrun.workers.registry.loading import RefusedArtifact, restricted_loads
from riverrun.workers.runtime.errors import ConfigurationError, RetryableError
from riverrun.workers.runtime.kafka import (
    consumer_config,
    flush_or_raise,
    produce,
    producer_config,
)

logger = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
_HEADER_ID = "riverrun.artifact.id"
_HEADER_CHUNK = "riverrun.artifact.chunk"
_HEADER_COUNT = "riverrun.artifact.chunks"


class ArtifactUnavailable(RetryableError):
    """An artifact's bytes could not be read or written (missing, cut short, broker down)."""


def dump_model(estimator: Any, feature_modules: Iterable[str] = ()) -> bytes:
    """Pickle an estimator (protocol 5) in canonical form: the same state gives the same bytes.

    A first pickle shares strings that a loaded copy no longer shares (a step name and its
    class's `__name__`), so the loaded copy would pickle differently. Pickling the copy that the
    restricted loader makes of the first pickle is a fixed point: a scorer that loads an
    artifact and dumps it gets the very bytes that were published. Going through the restricted
    loader also means a model no scorer could load is refused here, at the publisher.

    Raises:
        RefusedArtifact: the model pickles a global outside the loader's allow-list.

    """
    try:
        first = deep_dumps(estimator)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise RefusedArtifact(
            "NotPicklable", f"the model cannot be pickled ({exc}): a feature function must be "
            "a plain function of an importable module, not a lambda or a nested function",
        ) from exc
    return deep_dumps(restricted_loads(first, "the model", feature_modules))


# Pickling recurses once per level of nesting, and some River structures nest as deep as the
# data is long (the E-BST split candidates of a regression tree are a binary search tree that
# sorted input degenerates into a list): a thread of its own, with room to recurse.
_DEEP_STACK_BYTES = 512 * 1024 * 1024  # address space reserved, touched only as it is used
_DEEP_RECURSION = 200_000


def deep_dumps(obj: Any) -> bytes:
    """`pickle.dumps(obj, protocol=5)`, for objects nested deeper than Python's usual limit."""
    result: list[bytes] = []
    failure: list[BaseException] = []

    def dump() -> None:
        try:
            result.append(pickle.dumps(obj, protocol=5))
        except BaseException as exc:  # noqa: BLE001  # handed to the caller's thread below
            failure.append(exc)

    with _DEEP_LOCK:
        previous_stack = threading.stack_size(_DEEP_STACK_BYTES)
        previous_limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(previous_limit, _DEEP_RECURSION))
        try:
            thread = threading.Thread(target=dump, name="riverrun-pickle")
            thread.start()
        finally:
            threading.stack_size(previous_stack)
        thread.join()
        sys.setrecursionlimit(previous_limit)
    if failure:
        raise failure[0]
    return result[0]


_DEEP_LOCK = threading.Lock()


class ArtifactStore(Protocol):
    """Somewhere snapshot bytes are kept; the registry record holds the location."""

    def put(self, model: str, version: int, snapshot: int, data: bytes) -> str:
        """Store the bytes, durably; return their location."""
        ...

    def get(self, location: str, expected_size: int, max_bytes: int) -> bytes:
        """Read the bytes at a location; never more than `max_bytes`."""
        ...

    def forget(self, location: str, model: str, version: int, snapshot: int) -> None:
        """Delete the bytes at a location (a retired model's): they will not be read again."""
        ...


def _check_sizes(location: str, expected_size: int, max_bytes: int) -> None:
    if expected_size > max_bytes:
        raise ArtifactTooLarge(location, expected_size, max_bytes)


class ArtifactTooLarge(ConfigurationError):
    """An artifact is larger than `RIVERRUN_REGISTRY__MAX_ARTIFACT_BYTES` allows."""

    def __init__(self, location: str, size: int, max_bytes: int) -> None:
        super().__init__(
            f"artifact {location} is {size} bytes, over the limit of {max_bytes}: raise "
            "RIVERRUN_REGISTRY__MAX_ARTIFACT_BYTES if this model is expected to be that large"
        )
        self.size = size
        self.max_bytes = max_bytes


class FileArtifactStore:
    """Artifacts as files under one directory, `file:///abs/root/model/v3/s12-<id>.pkl`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def put(self, model: str, version: int, snapshot: int, data: bytes) -> str:
        """Write the file atomically (temporary file, fsync, rename) and return its location."""
        directory = self.root / model / f"v{version}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"s{snapshot}-{uuid.uuid4().hex[:12]}.pkl"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.as_uri()

    def forget(self, location: str, model: str, version: int, snapshot: int) -> None:
        """Remove the file, if it is still there."""
        Path(urlsplit(location).path).unlink(missing_ok=True)

    def get(self, location: str, expected_size: int, max_bytes: int) -> bytes:
        """Read a `file://` location, refusing anything over `max_bytes` before reading."""
        _check_sizes(location, expected_size, max_bytes)
        parts = urlsplit(location)
        if parts.scheme != "file":
            raise ArtifactUnavailable(f"{location} is not a file:// location")
        path = Path(parts.path)
        try:
            status = path.stat()
            if not stat.S_ISREG(status.st_mode):  # /dev/zero would feed a reader for ever
                raise ArtifactUnavailable(f"{location} is not a regular file")
            if status.st_size > max_bytes:
                raise ArtifactTooLarge(location, status.st_size, max_bytes)
            with path.open("rb") as handle:
                # The record's size plus one: enough to tell a file that grew, and no more.
                return handle.read(min(expected_size, max_bytes) + 1)
        except OSError as exc:
            raise ArtifactUnavailable(f"cannot read artifact {location}: {exc.strerror}") from exc


class KafkaArtifactStore:
    """Artifacts as ordered chunks on one partition of a compacted Kafka topic."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        timeout: float = 60.0,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.chunk_bytes = chunk_bytes
        self.timeout = timeout
        self._producer: Any = None

    def _chunk_producer(self) -> Any:
        from confluent_kafka import Producer

        # One producer for the store's life: a new idempotent producer costs a round of
        # metadata and producer-id requests, which dominated every snapshot's publish time.
        if self._producer is None:
            self._producer = Producer(producer_config(self.kafka, options={
                # A chunk plus headers must fit one request; chunks stay under the default 1 MB.
                "message.max.bytes": max(1_048_576, self.chunk_bytes + 65_536),
                "compression.type": "none",
            }))  # fmt: skip
        return self._producer

    def put(self, model: str, version: int, snapshot: int, data: bytes) -> str:
        """Produce the chunks to partition 0, idempotently and flushed; return the location."""
        from confluent_kafka import KafkaError

        artifact_id = uuid.uuid4().hex
        count = max(1, -(-len(data) // self.chunk_bytes))
        producer = self._chunk_producer()
        offsets: dict[int, int] = {}
        errors: list[KafkaError] = []

        for index in range(count):
            chunk = data[index * self.chunk_bytes : (index + 1) * self.chunk_bytes]
            # Keyed by artifact id too: two releases racing for one version number each write
            # chunks before one of them wins, and the loser's must not compact the winner's away.
            key = _chunk_key(model, version, snapshot, artifact_id, index)
            headers: list[tuple[str, str | bytes | None]] = [
                (_HEADER_ID, artifact_id.encode()),
                (_HEADER_CHUNK, str(index).encode()),
                (_HEADER_COUNT, str(count).encode()),
            ]

            def deliver(err: KafkaError | None, msg: Any, index: int = index) -> None:
                if err is not None:
                    errors.append(err)
                else:
                    offsets[index] = msg.offset()

            produce(producer, self.topic, chunk, key, partition=0, headers=headers,
                    on_delivery=deliver)  # fmt: skip
            producer.poll(0)
        remaining = producer.flush(self.timeout)
        if remaining or errors or len(offsets) != count:
            reason = errors[0].str() if errors else f"{remaining} chunks not acknowledged"
            raise ArtifactUnavailable(
                f"could not write artifact of {model}@{version}#{snapshot} to {self.topic}: "
                f"{reason}"
            )
        first = offsets[0]
        logger.debug("wrote artifact %s in %d chunks at %s/0/%d", artifact_id, count,
                     self.topic, first)
        return f"kafka://{self.topic}/0/{first}?chunks={count}&id={artifact_id}"

    def forget(self, location: str, model: str, version: int, snapshot: int) -> None:
        """Tombstone the artifact's chunks, so that compaction reclaims them."""
        topic, partition, _first, count, artifact_id = parse_kafka_location(location)
        if artifact_id is None:
            return  # written before chunks were keyed by id: compaction keeps the newest
        producer = self._chunk_producer()
        for index in range(count):
            produce(producer, topic, None, _chunk_key(model, version, snapshot, artifact_id,
                                                      index), partition=partition)  # fmt: skip
        flush_or_raise(producer, self.timeout, f"tombstones of {location}")

    def close(self) -> None:
        """Flush and drop the producer, so nothing of it outlives the store's user."""
        if self._producer is not None:
            self._producer.flush(self.timeout)
            self._producer = None

    def get(self, location: str, expected_size: int, max_bytes: int) -> bytes:
        """Read exactly the location's chunks by assignment; refuse over `max_bytes`."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        _check_sizes(location, expected_size, max_bytes)
        topic, partition, first, count, artifact_id = parse_kafka_location(location)
        consumer = Consumer(consumer_config(
            self.kafka, f"riverrun-artifact-reader-{uuid.uuid4().hex[:8]}",  # never joined
            options={"fetch.message.max.bytes": max(1_048_576, self.chunk_bytes + 65_536)},
        ))  # fmt: skip
        chunks: dict[int, bytes] = {}
        total = 0
        try:
            consumer.assign([TopicPartition(topic, partition, first)])
            deadline = time.monotonic() + self.timeout
            while len(chunks) < count and time.monotonic() < deadline:
                for msg in consumer.consume(min(count, 100), 0.5):
                    error = msg.error()
                    if error is not None:
                        raise ArtifactUnavailable(f"reading {location}: {error.str()}")
                    headers = dict(msg.headers() or [])
                    if artifact_id and _header(headers, _HEADER_ID) != artifact_id:
                        continue
                    index = int(_header(headers, _HEADER_CHUNK) or "-1")
                    if index < 0 or index >= count or index in chunks:
                        continue
                    value = msg.value() or b""
                    total += len(value)
                    if total > max_bytes:
                        raise ArtifactTooLarge(location, total, max_bytes)
                    chunks[index] = value
        except KafkaException as exc:
            raise ArtifactUnavailable(f"reading {location}: {exc}") from exc
        finally:
            consumer.close()
        if len(chunks) < count:
            raise ArtifactUnavailable(
                f"artifact {location}: found {len(chunks)} of {count} chunks within "
                f"{self.timeout}s; was the topic compacted or truncated?"
            )
        return b"".join(chunks[i] for i in range(count))


def _header(headers: dict[str, Any], name: str) -> str:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _chunk_key(model: str, version: int, snapshot: int, artifact_id: str, index: int) -> bytes:
    return f"{model}/{version:010d}/{snapshot:012d}/{artifact_id}/{index:06d}".encode()


def parse_kafka_location(location: str) -> tuple[str, int, int, int, str | None]:
    """Split `kafka://topic/partition/offset?chunks=N&id=X` into its parts."""
    parts = urlsplit(location)
    path = parts.path.strip("/").split("/")
    query = parse_qs(parts.query)
    try:
        if parts.scheme != "kafka" or len(path) != 2:
            raise ValueError("expected kafka://<topic>/<partition>/<offset>?chunks=N")
        count = int(query.get("chunks", ["1"])[0])
        if count < 1:
            raise ValueError("chunks must be at least 1")
        return parts.netloc, int(path[0]), int(path[1]), count, query.get("id", [None])[0]
    except ValueError as exc:
        raise ArtifactUnavailable(f"bad artifact location {location!r}: {exc}") from exc


def artifact_store(url: str, kafka: KafkaSettings, topics: TopicSettings) -> ArtifactStore:
    """The store `--artifact-store` names: `kafka` (the default) or `file:///abs/path`.

    Raises:
        ConfigurationError: the URL is neither.

    """
    if url == "kafka":
        return KafkaArtifactStore(kafka, topics.artifacts)
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.path.startswith("/"):
        return FileArtifactStore(Path(parts.path))
    raise ConfigurationError(
        f"RIVERRUN_REGISTRY__ARTIFACT_STORE is {url!r}: set it to `kafka` or file:///abs/path"
    )


def store_for_location(location: str, kafka: KafkaSettings) -> ArtifactStore:
    """A store that can read a location, whatever store wrote it."""
    scheme = urlsplit(location).scheme
    if scheme == "kafka":
        return KafkaArtifactStore(kafka, parse_kafka_location(location)[0])
    if scheme == "file":
        return FileArtifactStore(Path("/"))
    raise ArtifactUnavailable(f"artifact location {location!r} is neither kafka:// nor file://")
