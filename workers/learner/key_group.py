"""`riverrun learn --model NAME --stage keys`: a per-key model's keys, learned by a group.

The learners of a per-key model's keys form one consumer group over the key-state changelog
(`riverrun-key-learners-NAME`), which has as many partitions as feedback: a member owns the keys
whose labels arrive on the partitions of the numbers it is assigned. It reads the examples log
(every member reads all of it, group-less) and learns only its keys' examples, test-then-train,
each key from its own record on, for every per-key version that learns (the champion and the
versions its policy names, as the one-process learner does; a policy move is followed). For
each partition it owns it keeps a transactional producer (`riverrun-keys-NAME-P`): the keys of
partition P that changed and P's progress per version (the examples-log offset every key of P
has learned up to) go out in one transaction. A member that takes a partition over starts that
producer first, which fences the partition's previous owner, then reads the partition's keys and
progress back (read_committed) and resumes from the progress: no label is learned twice or lost,
whatever the group did. Rebalances are eager: every member writes all it holds before its
partitions move, and reads them back after; a policy move is handled the same way.

The global model is learned apart, by the model's learner started with `--keys apart`; so the
keys' records here carry no blended or global losses (those need the global model's answer on
each label, which only the one-process learner has at hand).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from riverrun.workers.keys.changelog import load_state, read_states, state_key, state_record
from riverrun.workers.keys.model import KeyModels
from riverrun.workers.learner.learn_stage import committed_example, versions_that_learn
from riverrun.workers.learner.log import examples_consumer
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.learner.summary import LearnSummary
from riverrun.workers.registry import Registry, RegistryRecord, RegistryView
from riverrun.workers.registry.records import lineage_key
from riverrun.workers.registry.spec import PerKey, per_key_of
from riverrun.workers.runtime.errors import ConfigurationError, FatalError
from riverrun.workers.runtime.kafka import (
    consumer_config,
    produce,
    producer_config,
    take_arrived,
)

logger = logging.getLogger(__name__)

PROGRESS = "#progress/"  # a progress record's key: `model@version#progress/P`
_WRITE_EVERY_S = 0.5


def progress_key(model: str, version: int, partition: int) -> bytes:
    """The record key of a version's progress on a partition (no key state's: see the module)."""
    return f"{model}@{version}{PROGRESS}{partition}".encode()


@dataclass
class _Version:
    """One per-key version this member learns the keys of."""

    version: int
    per_key: PerKey
    template: Any  # a fresh copy of the release's pipeline, cloned for each key
    released_at: int  # before a partition's first progress, its keys learn from here on
    models: KeyModels


class KeyGroupLearner:
    """One member of a per-key model's key learners."""

    def __init__(self, settings: LearnerSettings, registry: Registry) -> None:
        self._settings = settings
        self._registry = registry
        self._model = settings.learner.model
        self._topic = settings.topics.key_states
        self._lock = threading.Lock()
        self._view = registry.refresh()
        self._wanted = self._per_key_versions(self._view)
        if not self._wanted:
            raise ConfigurationError(
                f"{self._model} has no per-key version that learns: release a spec with "
                "per_key (or drop --stage keys)"
            )
        self._versions: list[_Version] = []
        self._every = settings.learner.snapshot_every
        self._owned: set[int] = set()
        self._producers: dict[int, Producer] = {}
        self._position = 0  # the next examples-log offset to read
        self._moved = False  # the assignment or the versions changed: read back before going on
        self._stop = threading.Event()
        self._summary = LearnSummary(version=self._wanted[0])

    def _per_key_versions(self, view: RegistryView) -> list[int]:
        return [v for v in versions_that_learn(view, self._model)
                if (released := view.version(self._model, v)) is not None
                and per_key_of(released.spec) is not None]  # fmt: skip

    def _start_version(self, version: int) -> _Version:
        with self._lock:  # the follower's thread applies records to the view
            released = self._view.version(self._model, version)
            snapshots = self._view.snapshots(self._model, version)
        per_key = per_key_of(released.spec) if released is not None else None
        if not snapshots or per_key is None:
            raise ConfigurationError(f"{self._model}@{version} has no snapshot to learn from")
        template = self._registry.load(snapshots[0]).clone()
        released_at = snapshots[0].lineage.get(lineage_key(self._settings.topics.examples), 0)
        # No global loss here (NaN): keys learn, their losses are not counted (see the module).
        return _Version(version, per_key, template, released_at,
                        KeyModels(template, per_key, classifier=False))  # fmt: skip

    # -- the runner's protocol -------------------------------------------------------------

    def is_ready(self) -> bool:
        """In the group and not stopping."""
        return not self._stop.is_set()

    def stop(self) -> None:
        """Finish the batch, write what is held, leave the group."""
        self._stop.set()

    def run(
        self, max_examples: int | None = None, idle_timeout: float | None = None
    ) -> LearnSummary:
        """Learn the owned keys until stopped, or `idle_timeout` seconds without an example."""
        kafka, client_id = self._settings.kafka, self._settings.kafka.client_id
        group = Consumer(consumer_config(
            kafka, f"riverrun-key-learners-{self._model}", client_id=f"{client_id}-keys",
            options={"partition.assignment.strategy": "range"},
        ))  # fmt: skip
        examples = examples_consumer(kafka, self._settings.topics.examples,
                                     f"{client_id}-keys-examples")  # fmt: skip
        follower = self._registry.follower(self._on_registry_record).start()
        group.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked,
                        on_lost=self._lost)  # fmt: skip
        clean = False
        last_example = last_write = time.monotonic()
        try:
            while not self._stop.is_set():
                group.poll(0)  # rebalance callbacks run here
                self._follow_policy()
                if self._moved:
                    self._restore(examples)
                if not self._owned:
                    group.poll(0.2)
                    if idle_timeout is not None and time.monotonic() - last_example > idle_timeout:
                        break
                    continue
                learned = self._learn(take_arrived(examples, 5_000, 0.2))
                now = time.monotonic()
                if learned:
                    last_example = now
                changed = sum(len(v.models.changed) for v in self._versions)
                if changed and (now - last_write >= _WRITE_EVERY_S
                                or (self._every is not None and changed >= self._every)):
                    self._write()
                    last_write = now
                if max_examples is not None and self._summary.examples_learned >= max_examples:
                    break
                if idle_timeout is not None and now - last_example > idle_timeout:
                    break
            clean = True
        finally:
            if clean and self._owned and not self._moved:
                self._write()
            follower.stop()
            group.close()  # leaves the group: its partitions move on at once
            examples.close()
            self._close_producers()
        self._summary.next_offset = self._position
        return self._summary

    # -- learning ----------------------------------------------------------------------------

    def _learn(self, records: list[Any]) -> int:
        model, owned, versions = self._model, self._owned, self._versions
        learned = 0
        for record in records:
            err = record.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("examples read error: %s", err)
                continue
            self._position = (record.offset() or 0) + 1
            example = committed_example(record, model)
            if example is None or example.key is None or example.key_partition not in owned:
                continue
            offset, features, label, _, key, timestamp_ms, partition = example
            for version in versions:
                if offset < version.released_at:
                    continue
                models = version.models
                state = models.models.get(key)
                before = state.examples if state is not None else 0
                models.learn(key, offset, dict(features), label, math.nan, timestamp_ms,
                             partition)  # fmt: skip
                learned += models.models[key].examples - before
        self._summary.examples_learned += learned
        return learned

    def _write(self) -> None:
        """Each owned partition's changed keys and progress, in one transaction a partition."""
        model, signer = self._model, self._registry.signer
        feature_modules = self._registry.settings.feature_modules
        outgoing: dict[int, list[tuple[bytes, bytes | None, Any]]] = {p: [] for p in self._owned}
        for version in self._versions:
            models, number = version.models, version.version
            for key, partition in models.expired(models.newest_ms):
                if partition in outgoing:
                    outgoing[partition].append((state_key(model, number, key), None, None))
            for key in sorted(models.changed):
                partition = models.models[key].partition
                if partition in outgoing:
                    outgoing[partition].append(state_record(
                        model, number, key, models.models[key], signer, feature_modules))
            for partition, records in outgoing.items():
                records.append((progress_key(model, number, partition),
                                orjson.dumps({"next_offset": self._position}), None))
            models.changed.clear()
        for partition, records in outgoing.items():
            producer = self._producers[partition]
            try:
                producer.begin_transaction()
                for record_key, value, headers in records:
                    produce(producer, self._topic, value, record_key, headers=headers,
                            partition=partition)  # fmt: skip
                producer.commit_transaction(60.0)
            except KafkaException as exc:
                raise FatalError(f"key states of partition {partition} not written ({exc}): "
                                 "stopping; a restarted member resumes from the last "
                                 "written") from exc  # fmt: skip
        self._summary.snapshots_published += 1

    # -- the group and the registry ------------------------------------------------------------

    def _on_registry_record(self, record: RegistryRecord) -> None:
        if record.model != self._model:
            return
        with self._lock:
            self._view.apply(record)

    def _follow_policy(self) -> None:
        """Take up a policy move (new versions to learn the keys of) as a rebalance."""
        with self._lock:
            wanted = self._per_key_versions(self._view)
        if wanted == self._wanted or not wanted:
            return
        logger.info("the per-key versions of %s that learn are now %s (were %s)", self._model,
                    wanted, self._wanted)  # fmt: skip
        if self._owned and not self._moved:
            self._write()
        self._wanted = wanted
        self._moved = True

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        consumer.pause(partitions)  # membership only: the keys are read back apart
        self._owned = {p.partition for p in partitions}
        self._moved = True
        logger.info("key learner of %s owns partitions %s", self._model, sorted(self._owned))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._owned and not self._moved:
            self._write()  # what this member learned, before another takes the partitions
        self._give_up()
        consumer.unassign()

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up()  # another member may own them already: write nothing
        consumer.unassign()

    def _give_up(self) -> None:
        self._close_producers()
        self._owned = set()
        self._versions = []

    def _close_producers(self) -> None:
        for producer in self._producers.values():
            producer.flush(10.0)
        self._producers = {}

    def _restore(self, examples: Consumer) -> None:
        """Fence the partitions' previous owners, read their keys and progress, seek back."""
        self._moved = False
        if not self._owned:
            return  # read back when partitions are assigned
        kafka, model = self._settings.kafka, self._model
        for partition in sorted(self._owned - self._producers.keys()):
            producer = Producer(producer_config(
                kafka, client_id=f"{kafka.client_id}-keys-{partition}",
                transactional_id=f"riverrun-keys-{model}-{partition}",
            ))  # fmt: skip
            producer.init_transactions(60.0)  # the partition's previous owner is fenced
            self._producers[partition] = producer
        self._versions = [self._start_version(v) for v in self._wanted]
        by_number = {v.version: v for v in self._versions}
        progress: dict[tuple[int, int], int] = {}

        def on_progress(record_key: bytes, value: bytes | None, partition: int) -> None:
            head, _, number = record_key.decode("utf-8", "replace").partition(PROGRESS)
            name, _, version = head.partition("@")
            if name == model and version.isdigit() and value is not None:
                progress[(int(version), int(number))] = int(orjson.loads(value)["next_offset"])

        started = time.perf_counter()
        stored = read_states(kafka, self._topic, self._registry.verifier,
                             lambda m, v: m == model and v in by_number,
                             partitions=sorted(self._owned), other=on_progress)  # fmt: skip
        feature_modules = self._registry.settings.feature_modules
        for number, version in by_number.items():
            version.models.restore((key, load_state(state, feature_modules))
                                   for (_, v, key), state in stored.items() if v == number)
        self._position = min(progress.get((v.version, p), v.released_at)
                             for v in self._versions for p in self._owned)  # fmt: skip
        examples.assign([TopicPartition(self._settings.topics.examples, 0, self._position)])
        logger.info("key learner of %s: %d keys of versions %s, partitions %s, read back in "
                    "%.2f s; learning from examples offset %d", model, len(stored),
                    sorted(by_number), sorted(self._owned), time.perf_counter() - started,
                    self._position)  # fmt: skip
