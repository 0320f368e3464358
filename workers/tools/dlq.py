"""`riverrun dlq`: read dead letters, and send chosen ones back once their cause is fixed.

`list` reads the dead-letter topic (filtered by class, model, source topic and time) and prints
each letter's coordinates, class and reason. `resend` sends the originals of the matching ones
back to their source topic, which must be an input (`requests` or `feedback`): each at most once
ever, because the resends and a marker per dead letter (on the compacted `resent` topic) are
written in one transaction, and letters already marked are passed by. A letter cut to fit the
broker's limit is resent from its original, read back at its source coordinates.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from pydantic import Field

from riverrun.schemas import (
    DeadLetter,
    KafkaSettings,
    RiverrunSettings,
    TopicSettings,
    add_settings_flags,
    collect_section_flags,
)
from riverrun.workers.runtime.errors import ConfigurationError, RetryableError
from riverrun.workers.runtime.kafka import (
    consumer_config,
    produce,
    producer_config,
    watermarks,
)

logger = logging.getLogger(__name__)

_TXN_TIMEOUT_S = 60.0


class DlqSettings(RiverrunSettings):
    """Settings of `riverrun dlq`."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)


@dataclass(frozen=True)
class Letter:
    """One dead letter as read: where it is, why, and the original's bytes (maybe cut)."""

    partition: int
    offset: int
    letter: DeadLetter
    key: bytes | None
    value: bytes | None

    @property
    def marker(self) -> bytes:
        """Its key on the `resent` topic."""
        return f"{self.partition}/{self.offset}".encode()

    @property
    def model(self) -> str | None:
        """The model the letter is about: the version that failed, else the original's own."""
        if self.letter.model is not None:
            return self.letter.model
        try:
            model = orjson.loads(self.value or b"").get("model")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return model if isinstance(model, str) else None

    @property
    def cut(self) -> bool:
        """Whether it carries only the start of the original."""
        return self.letter.key_bytes is not None or self.letter.value_bytes is not None


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command is about."""

    error_class: str | None = None
    model: str | None = None
    source_topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def admit(self, found: Letter) -> bool:
        """Whether a dead letter matches every filter given."""
        letter = found.letter
        return (
            (self.error_class is None or letter.error_class == self.error_class)
            and (self.model is None or found.model == self.model)
            and (self.source_topic is None or letter.source_topic == self.source_topic)
            and (self.since is None or letter.failed_at >= self.since)
            and (self.until is None or letter.failed_at < self.until)
        )

def register(parser: argparse.ArgumentParser) -> None:
    """Add `riverrun dlq list` and `riverrun dlq resend`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="Dead letters, oldest first.")
    listing.add_argument("--limit", type=int, default=100, help="Print at most N [100].")
    listing.add_argument("--json", action="store_true", help="One JSON object a line.")
    listing.set_defaults(handler=_run_list)
    resend = actions.add_parser(
        "resend", help="Send the matching dead letters' originals back to their input topic."
    )
    resend.add_argument("--dry-run", action="store_true", help="Say what would be sent.")
    resend.set_defaults(handler=_run_resend)
    for sub in (listing, resend):
        sub.add_argument("--class", dest="error_class", default=None,
                         help="Only this error class, e.g. UnknownModel.")
        sub.add_argument("--model", default=None, help="Only letters of this model.")
        sub.add_argument("--source-topic", default=None, help="Only letters from this topic.")
        sub.add_argument("--since", type=datetime.fromisoformat, default=None,
                         help="Only letters that failed at or after this ISO time.")
        sub.add_argument("--until", type=datetime.fromisoformat, default=None,
                         help="Only letters that failed before this ISO time.")
        add_settings_flags(sub, DlqSettings)


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(args.error_class, args.model, args.source_topic, args.since, args.until)


def read_letters(kafka: KafkaSettings, topic: str, filters: Filters) -> Iterator[Letter]:
    """The dead letters of `topic` that match, up to its end now, partition by partition."""
    consumer = Consumer(consumer_config(kafka, f"riverrun-dlq-{uuid.uuid4().hex[:8]}"))
    try:
        for partition, low, high in _ranges(consumer, topic):
            consumer.assign([TopicPartition(topic, partition, low)])
            position = low
            quiet_since = time.monotonic()
            while position < high:
                # consume() waits for a full batch or its timeout: keep the timeout short.
                batch = consumer.consume(500, 0.2)
                if not batch:
                    if _at_end(consumer, topic, partition, high, quiet_since):
                        break
                    continue
                quiet_since = time.monotonic()
                for record in batch:
                    if record.error() is not None:
                        continue
                    position = (record.offset() or 0) + 1
                    try:
                        letter = DeadLetter.from_headers(list(record.headers() or []))
                    except (KeyError, ValueError):
                        continue  # not written by riverrun
                    found = Letter(partition, record.offset() or 0, letter, record.key(),
                                   record.value())  # fmt: skip
                    if filters.admit(found):
                        yield found
                    if position >= high:
                        break
    finally:
        consumer.close()


def _ranges(consumer: Consumer, topic: str) -> list[tuple[int, int, int]]:
    info = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise ConfigurationError(
            f"dead-letter topic {topic} does not exist: set RIVERRUN_TOPICS__DEAD_LETTERS "
            "(--topic-dead-letters), or run `riverrun topics create`"
        )
    deadline = time.monotonic() + 10.0
    ranges = []
    for partition in sorted(info.partitions):
        low, high = watermarks(consumer, TopicPartition(topic, partition), deadline)
        if high > low:
            ranges.append((partition, low, high))
    return ranges


def _at_end(consumer: Consumer, topic: str, partition: int, high: int, quiet_since: float) -> bool:
    """Whether a quiet read has reached `high`: past it are only transaction markers."""
    position = consumer.position([TopicPartition(topic, partition)])[0].offset
    return position >= high or time.monotonic() - quiet_since > 5.0


def _run_list(args: argparse.Namespace) -> int:
    settings = DlqSettings(**collect_section_flags(args))
    shown = 0
    for found in read_letters(settings.kafka, settings.topics.dead_letters, _filters(args)):
        if shown >= args.limit:
            print("(more match: raise --limit to see them)")
            break
        shown += 1
        letter = found.letter
        if args.json:
            print(json.dumps({"partition": found.partition, "offset": found.offset,
                              "key": (found.key or b"").decode("utf-8", "replace")[:200],
                              **letter.model_dump(mode="json", exclude={"schema_version"}),
                              "model": found.model}))
            continue
        source = f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"
        cut = " (cut to fit)" if found.cut else ""
        print(f"{found.partition}/{found.offset}  {letter.failed_at:%Y-%m-%d %H:%M:%S}  "
              f"{letter.error_class}  {found.model or '-'}  from {source}{cut}: "
              f"{letter.reason[:160]}")
    if not shown:
        print("no dead letters match")
    return 0


def _run_resend(args: argparse.Namespace) -> int:
    settings = DlqSettings(**collect_section_flags(args))
    topics = settings.topics
    inputs = {topics.requests, topics.feedback}
    letters = list(read_letters(settings.kafka, topics.dead_letters, _filters(args)))
    already = _resent(settings.kafka, topics.resent)
    sendable, passed = [], 0
    for found in letters:
        if found.marker in already:
            passed += 1
        elif found.letter.source_topic not in inputs:
            logger.warning("not resending %d/%d: its source %s is not an input topic (%s)",
                           found.partition, found.offset, found.letter.source_topic,
                           ", ".join(sorted(inputs)))  # fmt: skip
        else:
            sendable.append(found)
    if args.dry_run or not sendable:
        verb = "would resend" if args.dry_run else "resent"
        print(f"{verb} {len(sendable) if args.dry_run else 0} of {len(letters)} matching dead "
              f"letters ({passed} sent back before)")
        return 0
    originals = [_original(settings.kafka, found) for found in sendable]
    sent = _send_back(settings.kafka, topics.resent, topics.dead_letters, sendable, originals)
    print(f"resent {sent} of {len(letters)} matching dead letters ({passed} sent back before)")
    return 0


def _resent(kafka: KafkaSettings, topic: str) -> set[bytes]:
    """Keys of the dead letters sent back already (the `resent` topic may not exist yet)."""
    consumer = Consumer(consumer_config(kafka, f"riverrun-dlq-{uuid.uuid4().hex[:8]}"))
    seen: set[bytes] = set()
    try:
        info = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if info is None or info.error is not None:
            return seen
        for partition, low, high in _ranges(consumer, topic):
            consumer.assign([TopicPartition(topic, partition, low)])
            quiet_since = time.monotonic()
            while True:
                batch = consumer.consume(500, 0.2)
                if not batch:
                    if _at_end(consumer, topic, partition, high, quiet_since):
                        break
                    continue
                quiet_since = time.monotonic()
                for record in batch:
                    if record.error() is None and record.key() is not None:
                        seen.add(record.key())
                if (batch[-1].offset() or 0) + 1 >= high:
                    break
    finally:
        consumer.close()
    return seen


def _original(kafka: KafkaSettings, found: Letter) -> tuple[bytes | None, bytes | None, Any]:
    """The original record's key, value and headers: the letter's own, or read back if cut."""
    if not found.cut:
        return found.key, found.value, None
    letter = found.letter
    consumer = Consumer(consumer_config(kafka, f"riverrun-dlq-{uuid.uuid4().hex[:8]}"))
    try:
        consumer.assign([TopicPartition(letter.source_topic, letter.source_partition,
                                        letter.source_offset)])  # fmt: skip
        record = consumer.poll(10)
        if record is None or record.error() is not None or record.offset() != letter.source_offset:
            raise RetryableError(
                f"the original of dead letter {found.partition}/{found.offset} is no longer at "
                f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset} "
                "(retention?): it cannot be resent whole"
            )
        return record.key(), record.value(), None
    finally:
        consumer.close()


def _send_back(
    kafka: KafkaSettings, resent_topic: str, dead_letters: str, letters: list[Letter],
    originals: list[tuple[bytes | None, bytes | None, Any]],
) -> int:
    """Resend the originals and mark each letter, all in one transaction."""
    producer = Producer(producer_config(
        kafka, transactional_id=f"riverrun-dlq-resend-{dead_letters}",
        transaction_timeout_s=_TXN_TIMEOUT_S,
    ))  # fmt: skip
    # Fences a resend of the same topic still in flight: two cannot send one letter twice.
    producer.init_transactions(_TXN_TIMEOUT_S)
    producer.begin_transaction()
    for found, (key, value, _headers) in zip(letters, originals, strict=True):
        produce(producer, found.letter.source_topic, value, key,
                headers=[("riverrun.resent_from",
                          f"{dead_letters}/{found.partition}/{found.offset}".encode())])
        produce(producer, resent_topic, b"1", found.marker, partition=0)
    try:
        producer.commit_transaction(_TXN_TIMEOUT_S)
    except Exception as exc:
        error = exc.args[0] if exc.args else exc
        raise RetryableError(
            f"resend not committed ({error}); nothing was sent: try again"
        ) from exc
    return len(letters)

