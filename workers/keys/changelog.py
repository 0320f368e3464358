"""The key-state changelog: one compacted record per key of a per-key version, its latest state.

A record's key is `model@version/key`; its value the key's estimator, pickled in canonical form;
its headers the counts (`KeyStateCounts`) and an HMAC over both, bound to the record's key, so
a scorer or a restarted learner loads only what a learner of this registry wrote. A tombstone
(no value) forgets an expired key. A key's record goes to the partition of the same number as
the feedback partition its labels arrive on, which is its requests' partition number when
upstream keys both alike (the same key, partitioner and partition count): the scorer that owns
a requests partition finds its keys in the changelog partition of that number.
"""

from __future__ import annotations

import pickle
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field

from riverrun.schemas import KafkaSettings
from riverrun.workers.keys.model import KeyModel
from riverrun.workers.registry.loading import restricted_loads
from riverrun.workers.registry.signing import Signer
from riverrun.workers.runtime.errors import ConfigurationError, FatalError
from riverrun.workers.runtime.kafka import (
    consumer_config,
    flush_or_raise,
    produce,
    producer_config,
    topic_partitions,
    watermarks,
)

COUNTS_HEADER = "riverrun.key.counts"
SIGNATURE_HEADER = "riverrun.key.signature"
ROLE = "key_states"  # the topic's role: RIVERRUN_TOPICS__KEY_STATES names it


class KeyStateCounts(BaseModel):
    """What a key's record says besides its estimator (`riverrun models keys` shows it)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    examples: int = Field(ge=0, description="Labels of the key learned.")
    next_offset: int = Field(ge=0, description="Examples-log offset after the last one learned.")
    updated_ms: int = Field(ge=0, description="Time of the key's last label in the examples log.")
    scored: int = Field(default=0, ge=0, description="Labels whose losses were counted.")
    blend_loss: float = Field(default=0.0, description="Sum of the log losses of its answers.")
    global_loss: float = Field(default=0.0, description="Sum of the global model's log losses.")


class StateCounts(NamedTuple):
    """`KeyStateCounts` once validated, held compactly (a scorer holds one per key)."""

    examples: int
    next_offset: int
    updated_ms: int
    scored: int
    blend_loss: float
    global_loss: float


@dataclass(frozen=True, slots=True)
class StoredKeyState:
    """A key's latest record as read from the changelog, its estimator still pickled."""

    model: str
    version: int
    key: str
    counts: StateCounts
    value: bytes
    partition: int  # the changelog partition it was read from


def state_key(model: str, version: int, key: str) -> bytes:
    """The changelog record key of a key's state: `model@version/key`."""
    return f"{model}@{version}/{key}".encode()


def parse_state_key(raw: bytes) -> tuple[str, int, str] | None:
    """`(model, version, key)` of a record key; None for one that is not a key state's."""
    text = raw.decode("utf-8", "replace")
    model, at, rest = text.partition("@")
    version, slash, key = rest.partition("/")
    if not at or not slash or not version.isdigit():
        return None
    return model, int(version), key


def partition_of(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner gives records keyed `key` (CRC-32)."""
    return zlib.crc32(key.encode()) % partitions


def dump_estimator(estimator: Any, feature_modules: Iterable[str] = ()) -> bytes:
    """Pickle a key's estimator in canonical form: a loaded copy pickles to the same bytes."""
    first = pickle.dumps(estimator, protocol=5)
    return pickle.dumps(restricted_loads(first, "a key's model", feature_modules), protocol=5)


def _signed(counts: bytes, value: bytes | None) -> bytes:
    return counts + b"\n" + (value or b"")


def state_record(
    model: str, version: int, key: str, state: KeyModel, signer: Signer,
    feature_modules: Iterable[str] = (),
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The record of a key's state: its key, value and headers."""
    record_key = state_key(model, version, key)
    value = dump_estimator(state.estimator, feature_modules)
    counts = orjson.dumps({
        "examples": state.examples, "next_offset": state.next_offset,
        "updated_ms": state.updated_ms, "scored": state.scored,
        "blend_loss": state.blend_loss, "global_loss": state.global_loss,
    })  # fmt: skip
    signature = signer.sign(_signed(counts, value), subject=record_key.decode())
    return record_key, value, [(COUNTS_HEADER, counts), (SIGNATURE_HEADER, signature.encode())]


def load_state(stored: StoredKeyState, feature_modules: Iterable[str] = ()) -> KeyModel:
    """The live model of a stored key state (the allow-listed unpickler only).

    Raises:
        RefusedArtifact: the value names a global no spec's model pickles into.

    """
    counts = stored.counts
    estimator = restricted_loads(stored.value, f"the model of key {stored.key!r}", feature_modules)
    return KeyModel(estimator, counts.examples, counts.next_offset, counts.updated_ms,
                    counts.scored, counts.blend_loss, counts.global_loss,
                    stored.partition)  # fmt: skip


class KeyStateCheck:
    """Reads a changelog record into a `StoredKeyState`; None for a tombstone or a stranger's."""

    def __init__(self, signer: Signer | None) -> None:
        self.signer = signer
        self.refused = 0

    def __call__(
        self, record_key: bytes, value: bytes | None, headers: Any, partition: int
    ) -> StoredKeyState | None:
        parsed = parse_state_key(record_key)
        if parsed is None or value is None:
            return None
        found = dict(headers or ())
        counts_raw, signature = found.get(COUNTS_HEADER), found.get(SIGNATURE_HEADER)
        if counts_raw is None:
            self.refused += 1
            return None
        if self.signer is not None and (signature is None or not self.signer.verify(
                _signed(counts_raw, value), signature.decode("ascii", "replace"),
                subject=record_key.decode("utf-8", "replace"))):  # fmt: skip
            self.refused += 1
            return None
        model, version, key = parsed
        c = KeyStateCounts.model_validate_json(counts_raw)
        counts = StateCounts(c.examples, c.next_offset, c.updated_ms, c.scored, c.blend_loss,
                             c.global_loss)  # fmt: skip
        return StoredKeyState(model, version, key, counts, value, partition)


def changelog_reader(kafka: KafkaSettings, client_id: str) -> Consumer:
    """A group-less reader of the changelog (assigned partitions, never subscribed)."""
    return Consumer(consumer_config(kafka, f"{client_id}-unused", client_id=client_id,
                                    options={"enable.partition.eof": True}))  # fmt: skip


def read_states(
    kafka: KafkaSettings,
    topic: str,
    signer: Signer | None,
    wanted: Callable[[str, int], bool],
    *,
    partitions: Iterable[int] | None = None,
    timeout: float = 60.0,
    keepalive: Callable[[], None] | None = None,
    other: Callable[[bytes, bytes | None, int], None] | None = None,
) -> dict[tuple[str, int, str], StoredKeyState]:
    """Every key's latest state in the changelog (of the versions `wanted(model, version)` takes).

    Records that are no key's state go to `other(record_key, value, partition)`, in order.

    Raises:
        ConfigurationError: the topic does not exist.
        RetryableError: the broker did not answer in time.

    """
    reader = changelog_reader(kafka, "riverrun-key-states-reader")
    try:
        ids = list(partitions) if partitions is not None else topic_partitions(reader, topic, ROLE)
        deadline = time.monotonic() + timeout
        ends = {p: watermarks(reader, TopicPartition(topic, p), deadline)[1] for p in ids}
        left = {p for p, end in ends.items() if end > 0}
        reader.assign([TopicPartition(topic, p, 0) for p in left])
        states: dict[tuple[str, int, str], StoredKeyState] = {}
        check = KeyStateCheck(signer)
        while left:
            if time.monotonic() > deadline:
                raise FatalError(f"the key-state changelog {topic} was not read to its end "
                                 f"within {timeout:.0f} s")  # fmt: skip
            for record in reader.consume(10_000, 0.5):
                partition = record.partition()
                err = record.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        left.discard(partition)
                    continue
                if (record.offset() or 0) + 1 >= ends.get(partition, 0):
                    left.discard(partition)
                raw_key = record.key() or b""
                parsed = parse_state_key(raw_key)
                if parsed is None:
                    if other is not None:
                        other(raw_key, record.value(), partition)
                    continue
                if not wanted(parsed[0], parsed[1]):
                    continue
                stored = check(raw_key, record.value(), record.headers(), partition)
                if stored is None:
                    states.pop(parsed, None)  # a tombstone, or one refused: the key starts afresh
                else:
                    states[parsed] = stored
            if keepalive is not None:
                keepalive()
        return states
    finally:
        reader.close()


class KeyStateWriter:
    """Writes the keys a learner changed to the changelog, and waits for them to be acknowledged."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, signer: Signer, client_id: str,
        feature_modules: Iterable[str] = (),
    ) -> None:
        self._topic = topic
        self._signer = signer
        self._feature_modules = tuple(feature_modules)
        self._producer = Producer(producer_config(kafka, client_id=client_id,
                                                  options={"compression.type": "lz4"}))  # fmt: skip
        self._partitions = len(topic_partitions(self._producer, topic, ROLE))
        self._failed: list[str] = []

    def write(
        self, model: str, version: int, states: dict[str, KeyModel], changed: Iterable[str],
        gone: Iterable[tuple[str, int | None]] = (),
    ) -> int:
        """Write the changed keys' states and the tombstones of `gone` (key, partition).

        A key goes to its feedback partition's number; one without (written by hand) to
        where librdkafka would put its records. Returns the records written.

        Raises:
            ConfigurationError: the changelog has fewer partitions than feedback.
            FatalError: a record was not acknowledged (the snapshot must not claim it).

        """
        producer, topic = self._producer, self._topic
        written = 0
        for key in changed:
            state = states[key]
            record_key, value, headers = state_record(
                model, version, key, state, self._signer, self._feature_modules)
            produce(producer, topic, value, record_key, headers=headers,
                    partition=self._partition(key, state.partition), on_delivery=self._delivered)
            written += 1
        for key, partition in gone:
            produce(producer, topic, None, state_key(model, version, key),
                    partition=self._partition(key, partition), on_delivery=self._delivered)
            written += 1
        if written:
            flush_or_raise(producer, 60.0, "key states")
        if self._failed:
            failed, self._failed = self._failed, []
            raise FatalError(f"{len(failed)} key states were not written ({failed[0]}): "
                             "stopping before a snapshot claims them")  # fmt: skip
        return written

    def _partition(self, key: str, partition: int | None) -> int:
        if partition is None:
            return partition_of(key, self._partitions)
        if partition >= self._partitions:
            raise ConfigurationError(
                f"key {key!r} arrives on feedback partition {partition} but the key-state "
                f"changelog {self._topic} has {self._partitions} partitions: give it as many as "
                "feedback and requests (RIVERRUN_TOPICS__KEY_STATES names it)"
            )
        return partition

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._failed.append(str(err))

    def close(self) -> None:
        """Hand over what is left and close the producer."""
        self._producer.flush(10.0)

