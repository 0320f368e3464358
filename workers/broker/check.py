"""What a Kafka broker really guarantees, measured by probes that run against it.

Each probe works on its own uuid-named topics and groups, is bounded by a deadline, and reports
what it saw; nothing here is looked up from a table keyed by broker name.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported at runtime, not in its stubs
from pydantic import BaseModel, ConfigDict, Field

from riverrun.schemas import KafkaSettings

logger = logging.getLogger(__name__)

CAPABILITIES = (
    "idempotent_produce",
    "transactions",
    "read_committed",
    "log_compaction",
    "cooperative_sticky",
    "consumer_group_protocol",
    "persistence",
)

PROBE_TIMEOUT_S = 10.0
COMPACTION_TIMEOUT_S = 6.0


class Restartable(Protocol):
    """A broker handle riverrun started, which can stop and start the broker on its data."""

    def restart(self) -> None:
        """Stop every node and start them again on the same data and ports."""


class BrokerCapabilities(BaseModel):
    """The measured guarantees of one broker, with what each probe saw."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = Field(description="The broker that was probed.")
    idempotent_produce: bool = Field(description="enable.idempotence producers deliver.")
    transactions: bool = Field(description="A committed transaction is readable.")
    read_committed: bool = Field(description="Aborted records are hidden from read_committed.")
    log_compaction: bool = Field(description="A compacted topic keeps the latest value per key.")
    cooperative_sticky: bool = Field(description="Cooperative-sticky rebalances incrementally.")
    consumer_group_protocol: bool = Field(description="group.protocol=consumer (KIP-848) works.")
    persistence: bool | None = Field(
        description="Records survive a broker restart; None when not probed."
    )
    details: dict[str, str] = Field(description="What each probe saw, by capability.")
    seconds: float = Field(description="Wall time of the whole check.")

    def has(self, capability: str) -> bool:
        """Whether the broker showed `capability`; unknown names raise KeyError."""
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
        return bool(getattr(self, capability))

    def detail(self, capability: str) -> str:
        """Return what the probe of `capability` saw."""
        return self.details.get(capability, "not probed")


class _Probe:
    """Clients and uuid names for one check run, all on the same connection settings."""

    def __init__(self, settings: KafkaSettings, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.run_id = uuid.uuid4().hex[:10]
        self.topics: list[str] = []
        self._lock = threading.Lock()
        self.admin = AdminClient(settings.client_config({"logger": _QUIET}))
        brokers = self.admin.list_topics(timeout=timeout_s).brokers
        self.replication = max(1, min(3, len(brokers)))

    def name(self, what: str) -> str:
        return f"riverrun-check-{what}-{self.run_id}"

    def config(self, **defaults: Any) -> dict[str, Any]:
        return self.settings.client_config({"logger": _QUIET, **defaults})

    def create_topic(self, what: str, partitions: int = 1,
                     config: dict[str, str] | None = None) -> str:
        topic = self.name(what)
        futures = self.admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=self.replication,
                      config=config or {})],
            operation_timeout=self.timeout_s,
        )
        futures[topic].result(timeout=self.timeout_s)
        with self._lock:
            self.topics.append(topic)
        _wait_for(lambda: self._has_leaders(topic, partitions), self.timeout_s)
        return topic

    def _has_leaders(self, topic: str, partitions: int) -> bool:
        found = self.admin.list_topics(topic, timeout=5).topics.get(topic)
        return (found is not None and found.error is None
                and len(found.partitions) == partitions
                and all(p.leader >= 0 for p in found.partitions.values()))

    def read_all(self, topic: str, partition: int = 0, isolation: str = "read_uncommitted",
                 timeout_s: float | None = None) -> list[Message]:
        """Every record of one partition from its start until the consumer reaches its end."""
        consumer = Consumer(self.config(**{
            "group.id": self.name("reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
        }))
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        records: list[Message] = []
        try:
            consumer.assign([TopicPartition(topic, partition, -2)])  # -2: OFFSET_BEGINNING
            while time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    records.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    return records
                elif not error.retriable():
                    raise KafkaException(error)
            raise TimeoutError(f"end of {topic}[{partition}] not reached "
                               f"within {timeout_s or self.timeout_s:.0f}s")
        finally:
            consumer.close()

    def delete_topics(self) -> None:
        if self.topics:
            # Best effort: a broker that cannot delete topics should not fail the check.
            try:
                for future in self.admin.delete_topics(self.topics).values():
                    future.result(timeout=5)
            except Exception as exc:  # noqa: BLE001 - cleanup only, reported at DEBUG
                logger.debug("could not delete probe topics: %s", exc)


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except KafkaException:
            pass
        time.sleep(0.1)
    return False


def _deliver(producer: Producer, topic: str, records: Sequence[tuple[bytes | None, bytes]],
             timeout_s: float) -> list[str]:
    """Produce and flush; return the delivery errors (empty when all were acknowledged)."""
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in records:
        producer.produce(topic, value, key, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(timeout_s)
    if left:
        errors.append(f"{left} records not acknowledged within {timeout_s:.0f}s")
    return errors


def _probe_idempotent(probe: _Probe) -> tuple[bool, str]:
    topic = probe.create_topic("idempotent")
    producer = Producer(probe.config(**{"enable.idempotence": True, "acks": "all"}))
    count = 20
    errors = _deliver(producer, topic, [(None, b"%d" % i) for i in range(count)],
                      probe.timeout_s)
    if errors:
        return False, f"{count} produced with enable.idempotence; errors: {errors[:3]}"
    values = [m.value() for m in probe.read_all(topic)]
    expected = [b"%d" % i for i in range(count)]
    ok = values == expected
    return ok, (f"{count} produced with enable.idempotence, all acknowledged; read back "
                f"{len(values)}{'' if ok else ' (not the records sent, in order)'}")


def _probe_transactions(probe: _Probe) -> dict[str, tuple[bool, str]]:
    topic = probe.create_topic("txn")
    producer = Producer(probe.config(**{
        "transactional.id": probe.name("txn"),
        "enable.idempotence": True,
        "acks": "all",
        "transaction.timeout.ms": 30000,
    }))
    t = probe.timeout_s
    try:
        producer.init_transactions(t)
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, b"committed-%d" % i)
        producer.commit_transaction(t)
    except KafkaException as exc:
        failed = f"commit failed: {exc.args[0]}"
        return {"transactions": (False, failed),
                "read_committed": (False, f"not observed: transactions failed ({failed})")}
    try:
        producer.begin_transaction()
        producer.produce(topic, b"aborted-0")
        producer.flush(t)  # the aborted record must reach the log, or there is nothing to hide
        producer.abort_transaction(t)
        # A committed record after the abort: once a reader sees it, it has passed the aborted one.
        producer.begin_transaction()
        producer.produce(topic, b"sentinel")
        producer.commit_transaction(t)
    except KafkaException as exc:
        return {"transactions": (True, "3 records committed in a transaction, read back 3"),
                "read_committed": (False, f"abort failed: {exc.args[0]}")}
    committed = [m.value() for m in probe.read_all(topic, isolation="read_committed")]
    uncommitted = [m.value() for m in probe.read_all(topic, isolation="read_uncommitted")]
    seen_committed = sum(1 for v in committed if v and v.startswith(b"committed-"))
    seen_aborted = sum(1 for v in committed if v and v.startswith(b"aborted-"))
    transactions_ok = seen_committed == 3 and b"sentinel" in committed
    hidden = transactions_ok and seen_aborted == 0
    summary = (f"3 committed + 1 aborted produced; read_committed saw {seen_committed} committed "
               f"and {seen_aborted} aborted; read_uncommitted saw {len(uncommitted) - 1} "
               "(sentinel excluded)")
    return {
        "transactions": (transactions_ok,
                         f"3 records committed in a transaction; read_committed read back "
                         f"{seen_committed}"),
        "read_committed": (hidden, summary),
    }


def _probe_compaction(probe: _Probe, timeout_s: float) -> tuple[bool, str]:
    topic = probe.create_topic("compact", config={
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
        "min.compaction.lag.ms": "0",
        "max.compaction.lag.ms": "1000",
        "file.delete.delay.ms": "100",
    })
    producer = Producer(probe.config(acks="all", **{"linger.ms": 0}))
    keys, versions = 3, 5
    records = [(b"k%d" % k, b"v%d" % v) for v in range(versions) for k in range(keys)]
    errors = _deliver(producer, topic, records, probe.timeout_s)
    if errors:
        return False, f"produce to a compacted topic failed: {errors[:3]}"
    latest = {b"k%d" % k: b"v%d" % (versions - 1) for k in range(keys)}
    deadline = time.monotonic() + timeout_s
    seen = len(records)
    rolls = 0
    while time.monotonic() < deadline:
        # Only closed segments are cleaned; a record after segment.ms rolls the active one.
        time.sleep(0.15)
        _deliver(producer, topic, [(b"roll", b"%d" % rolls)], probe.timeout_s)
        rolls += 1
        messages = probe.read_all(topic, timeout_s=max(1.0, deadline - time.monotonic()))
        data = [(m.key(), m.value()) for m in messages if m.key() != b"roll"]
        seen = len(data)
        if seen == keys and dict(data) == latest:
            return True, (f"{len(records)} records on {keys} keys compacted to the latest value "
                          f"per key ({rolls} segment rolls)")
    return False, (f"not observed within {timeout_s:.0f}s: {seen} of {len(records)} records "
                   f"on {keys} keys still there")


def _probe_cooperative(probe: _Probe) -> tuple[bool, str]:
    partitions = 4
    topic = probe.create_topic("coop", partitions=partitions)
    group = probe.name("coop")
    owned: dict[str, set[int]] = {"a": set(), "b": set()}
    revoked: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[str] = []

    def make(name: str) -> Consumer:
        def on_assign(_c: Consumer, tps: list[TopicPartition]) -> None:
            owned[name].update(tp.partition for tp in tps)

        def on_revoke(_c: Consumer, tps: list[TopicPartition]) -> None:
            owned[name].difference_update(tp.partition for tp in tps)
            revoked[name].append(len(tps))

        consumer = Consumer(probe.config(**{
            "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "error_cb": lambda err: errors.append(str(err)),
        }))
        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        return consumer

    first = make("a")
    second: Consumer | None = None
    try:
        deadline = time.monotonic() + probe.timeout_s
        while len(owned["a"]) < partitions and time.monotonic() < deadline:
            first.poll(0.1)
        if len(owned["a"]) < partitions:
            return False, (f"the first consumer got {sorted(owned['a'])} of {partitions}; "
                           f"{errors[:2]}")
        second = make("b")
        lowest_first = partitions
        while time.monotonic() < deadline:
            first.poll(0.05)
            second.poll(0.05)
            lowest_first = min(lowest_first, len(owned["a"]))
            if owned["b"] and owned["a"] and not owned["a"] & owned["b"] \
                    and len(owned["a"] | owned["b"]) == partitions:
                break
        incremental = bool(owned["b"]) and lowest_first > 0 and all(
            n < partitions for n in revoked["a"]
        )
        return incremental, (
            f"first held {partitions}; after the second joined it kept {len(owned['a'])} "
            f"(never fewer than {lowest_first}, revocations {revoked['a']}), "
            f"second got {len(owned['b'])}"
            + (f"; errors {errors[:2]}" if errors else "")
        )
    finally:
        first.close()
        if second is not None:
            second.close()


def _probe_consumer_protocol(probe: _Probe) -> tuple[bool, str]:
    topic = probe.create_topic("kip848", partitions=2)
    errors: list[str] = []
    assigned: list[int] = []
    consumer = Consumer(probe.config(**{
        "group.id": probe.name("kip848"),
        "group.protocol": "consumer",
        "auto.offset.reset": "earliest",
        "error_cb": lambda err: errors.append(str(err)),
    }))
    try:
        consumer.subscribe(
            [topic], on_assign=lambda _c, tps: assigned.extend(tp.partition for tp in tps)
        )
        deadline = time.monotonic() + probe.timeout_s
        while not assigned and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and message.error() is not None:
                errors.append(str(message.error()))
            if errors and any("UNSUPPORTED" in e.upper() for e in errors):
                break
        if assigned:
            return True, f"group.protocol=consumer: assigned partitions {sorted(assigned)}"
        return False, (f"group.protocol=consumer: no assignment within {probe.timeout_s:.0f}s"
                       + (f"; errors {errors[:2]}" if errors else ""))
    finally:
        consumer.close()


def _probe_persistence(probe: _Probe, handle: Restartable) -> tuple[bool, str]:
    topic = probe.create_topic("persist")
    producer = Producer(probe.config(**{"acks": "all", "enable.idempotence": True}))
    count = 10
    errors = _deliver(producer, topic, [(None, b"%d" % i) for i in range(count)],
                      probe.timeout_s)
    producer.flush(1)
    del producer
    if errors:
        return False, f"produce before the restart failed: {errors[:3]}"
    handle.restart()
    after = probe.admin.list_topics(timeout=probe.timeout_s).topics.get(topic)
    if after is None or after.error is not None:
        return False, f"{count} acknowledged before a restart; the topic was gone after it"
    try:
        values = [m.value() for m in probe.read_all(topic)]
    except (KafkaException, TimeoutError) as exc:
        return False, f"{count} acknowledged before a restart; reading after it failed: {exc}"
    ok = len(values) == count
    return ok, f"{count} acknowledged before a restart; {len(values)} read back after it"


def _guarded(name: str, run: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - a probe that breaks reports its capability missing
        logger.debug("probe %s failed", name, exc_info=True)
        return False, f"probe failed: {type(exc).__name__}: {exc}"


def check_broker(
    settings: KafkaSettings,
    handle: Restartable | None = None,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
    compaction_timeout_s: float = COMPACTION_TIMEOUT_S,
) -> BrokerCapabilities:
    """Run every probe against the broker `settings` reach and report what it guarantees.

    The persistence probe restarts the broker, so it runs only with a `handle` riverrun
    started, after every other probe.
    """
    started = time.monotonic()
    probe = _Probe(settings, probe_timeout_s)
    results: dict[str, tuple[bool, str]] = {}
    try:
        with ThreadPoolExecutor(max_workers=5, thread_name_prefix="broker-probe") as pool:
            compaction = pool.submit(_guarded, "log_compaction",
                                     lambda: _probe_compaction(probe, compaction_timeout_s))
            txn = pool.submit(lambda: _transactions_guarded(probe))
            idempotent = pool.submit(_guarded, "idempotent_produce",
                                     lambda: _probe_idempotent(probe))
            coop = pool.submit(_guarded, "cooperative_sticky", lambda: _probe_cooperative(probe))
            kip848 = pool.submit(_guarded, "consumer_group_protocol",
                                 lambda: _probe_consumer_protocol(probe))
            results["idempotent_produce"] = idempotent.result()
            results.update(txn.result())
            results["log_compaction"] = compaction.result()
            results["cooperative_sticky"] = coop.result()
            results["consumer_group_protocol"] = kip848.result()
        persistence: bool | None = None
        if handle is None:
            results["persistence"] = (False, "not probed: broker not started by riverrun")
        else:
            results["persistence"] = _guarded("persistence",
                                              lambda: _probe_persistence(probe, handle))
            persistence = results["persistence"][0]
    finally:
        probe.delete_topics()
    return BrokerCapabilities(
        bootstrap_servers=settings.bootstrap_servers,
        idempotent_produce=results["idempotent_produce"][0],
        transactions=results["transactions"][0],
        read_committed=results["read_committed"][0],
        log_compaction=results["log_compaction"][0],
        cooperative_sticky=results["cooperative_sticky"][0],
        consumer_group_protocol=results["consumer_group_protocol"][0],
        persistence=persistence,
        details={name: detail for name, (_, detail) in results.items()},
        seconds=round(time.monotonic() - started, 2),
    )


def _transactions_guarded(probe: _Probe) -> dict[str, tuple[bool, str]]:
    try:
        return _probe_transactions(probe)
    except Exception as exc:  # noqa: BLE001 - see _guarded
        failed = f"probe failed: {type(exc).__name__}: {exc}"
        return {"transactions": (False, failed), "read_committed": (False, failed)}


_QUIET = logging.getLogger(__name__ + ".librdkafka")
"""librdkafka's own log lines during probes: expected failures, kept out of the terminal."""
_QUIET.setLevel(logging.ERROR)
_QUIET.propagate = False
