"""`riverrun learn --model NAME --stage keys`: a per-key version's keys, learned by a group.

The learners of a per-key model's keys form one consumer group over the key-state changelog
(`riverrun-key-learners-NAME`), which has as many partitions as feedback: a member owns the keys
whose labels arrive on the partitions of the numbers it is assigned. It reads the examples log
(every member reads all of it, group-less) and learns only its keys' examples, test-then-train,
each key from its own record on. For each partition it owns it keeps a transactional producer
(`riverrun-keys-NAME-VERSION-P`): the keys of partition P that changed, and P's progress (the
examples-log offset every key of P has learned up to), go out in one transaction. A member that
takes a partition over starts that producer first, which fences the partition's previous owner,
then reads the partition's keys and progress back (read_committed) and resumes from the
progress: no label is learned twice or lost, whatever the group did. Rebalances are eager:
every member writes all it holds before its partitions move, and reads them back after.

The global model is learned apart, by the model's learner started with `--keys apart`; so the
keys' records here carry no blended or global losses (those need the global model's answer on
each label, which only the one-process learner has at hand).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from riverrun.workers.keys.changelog import load_state, read_states, state_key, state_record
from riverrun.workers.keys.model import KeyModels
from riverrun.workers.learner.learn_stage import versions_that_learn
from riverrun.workers.learner.log import examples_consumer, read_example
from riverrun.workers.learner.settings import LearnerSettings
from riverrun.workers.learner.summary import LearnSummary
from riverrun.workers.registry import Registry
from riverrun.workers.registry.records import lineage_key
from riverrun.workers.registry.spec import per_key_of
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
    """The record key of partition `partition`'s progress (not a key state's: see the module)."""
    return f"{model}@{version}{PROGRESS}{partition}".encode()


class KeyGroupLearner:
    """One member of a per-key version's key learners."""

    def __init__(self, settings: LearnerSettings, registry: Registry) -> None:
        self._settings = settings
        self._registry = registry
        self._model = settings.learner.model
        self._topic = settings.topics.key_states
        view = registry.refresh()
        per_key = [v for v in versions_that_learn(view, self._model)
                   if (released := view.version(self._model, v)) is not None
                   and per_key_of(released.spec) is not None]  # fmt: skip
        if not per_key:
            raise ConfigurationError(
                f"{self._model} has no per-key version that learns: release a spec with "
                "per_key (or drop --stage keys)"
            )
        self.version = per_key[0]
        released = view.version(self._model, self.version)
        assert released is not None  # noqa: S101  # listed above
        snapshots = view.snapshots(self._model, self.version)
        if not snapshots:
            raise ConfigurationError(f"{self._model}@{self.version} has no snapshot yet")
        # A fresh copy of the release's pipeline per key, as the one-process learner makes.
        self._template = registry.load(snapshots[0]).clone()
        # Before its first progress, a partition's keys learn from the version's release on.
        self._released_at = snapshots[0].lineage.get(lineage_key(settings.topics.examples), 0)
        self._per_key = per_key_of(released.spec)
        self._every = settings.learner.snapshot_every
        self._models = self._fresh_models()
        self._owned: set[int] = set()
        self._producers: dict[int, Producer] = {}
        self._position = 0  # the next examples-log offset to read
        self._moved = False  # the assignment changed: restore before learning on
        self._stop = threading.Event()
        self._summary = LearnSummary(version=self.version)

    def _fresh_models(self) -> KeyModels:
        assert self._per_key is not None  # noqa: S101  # checked at start
        # No global loss here (NaN): keys learn, their losses are not counted (see the module).
        return KeyModels(self._template, self._per_key, classifier=False)

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
        group.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked,
                        on_lost=self._lost)  # fmt: skip
        clean = False
        last_example = last_write = time.monotonic()
        try:
            while not self._stop.is_set():
                group.poll(0)  # rebalance callbacks run here
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
                if (self._models.changed and (now - last_write >= _WRITE_EVERY_S or (
                        self._every is not None and len(self._models.changed) >= self._every))):
                    self._write()
                    last_write = now
                if max_examples is not None and self._summary.examples_learned >= max_examples:
                    break
                if idle_timeout is not None and now - last_example > idle_timeout:
                    break
            clean = True
        finally:
            if clean and self._owned:
                self._write()
            group.close()  # leaves the group: its partitions move on at once
            examples.close()
            self._close_producers()
        self._summary.next_offset = self._position
        return self._summary

    # -- learning ----------------------------------------------------------------------------

    def _learn(self, records: list[Any]) -> int:
        model, owned, models = self._model, self._owned, self._models
        learned = 0
        for record in records:
            err = record.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("examples read error: %s", err)
                continue
            offset = record.offset() or 0
            self._position = offset + 1
            example = read_example(record.value(), model)
            if example is None:
                continue
            features, label, key, partition = example
            if key is None or partition not in owned:
                continue
            before = models.models[key].examples if key in models.models else 0
            models.learn(key, offset, dict(features), label, math.nan, record.timestamp()[1],
                         partition)  # fmt: skip
            if models.models[key].examples > before:
                learned += 1
        self._summary.examples_learned += learned
        return learned

    def _write(self) -> None:
        """Each owned partition's changed keys and its progress, in one transaction each."""
        models, model, version = self._models, self._model, self.version
        signer = self._registry.signer
        feature_modules = self._registry.settings.feature_modules
        gone = dict(models.expired(models.newest_ms))
        by_partition: dict[int, list[str]] = {p: [] for p in self._owned}
        for key in sorted(models.changed):
            partition = models.models[key].partition
            if partition in by_partition:
                by_partition[partition].append(key)
        for partition, keys in by_partition.items():
            producer = self._producers[partition]
            try:
                producer.begin_transaction()
                for key in keys:
                    record_key, value, headers = state_record(
                        model, version, key, models.models[key], signer, feature_modules)
                    produce(producer, self._topic, value, record_key, headers=headers,
                            partition=partition)  # fmt: skip
                for key, where in gone.items():
                    if where == partition:
                        produce(producer, self._topic, None, state_key(model, version, key),
                                partition=partition)  # fmt: skip
                produce(producer, self._topic, orjson.dumps({"next_offset": self._position}),
                        progress_key(model, version, partition), partition=partition)
                producer.commit_transaction(60.0)
            except KafkaException as exc:
                raise FatalError(f"key states of partition {partition} not written ({exc}): "
                                 "stopping; a restarted member resumes from the last "
                                 "written") from exc  # fmt: skip
        models.changed.clear()
        self._summary.snapshots_published += 1

    # -- the group ---------------------------------------------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        consumer.pause(partitions)  # membership only: the keys are read back apart
        self._owned = {p.partition for p in partitions}
        self._moved = True
        logger.info("key learner of %s@%d owns partitions %s", self._model, self.version,
                    sorted(self._owned))  # fmt: skip

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
        self._models = self._fresh_models()

    def _close_producers(self) -> None:
        for producer in self._producers.values():
            producer.flush(10.0)
        self._producers = {}

    def _restore(self, examples: Consumer) -> None:
        """Fence the partitions' previous owners, read their keys and progress, seek back."""
        self._moved = False
        kafka, model, version = self._settings.kafka, self._model, self.version
        for partition in sorted(self._owned):
            producer = Producer(producer_config(
                kafka, client_id=f"{kafka.client_id}-keys-{partition}",
                transactional_id=f"riverrun-keys-{model}-{version}-{partition}",
            ))  # fmt: skip
            producer.init_transactions(60.0)  # the partition's previous owner is fenced
            self._producers[partition] = producer
        progress: dict[int, int] = {}

        def on_progress(record_key: bytes, value: bytes | None, partition: int) -> None:
            if record_key == progress_key(model, version, partition) and value is not None:
                progress[partition] = int(orjson.loads(value)["next_offset"])

        started = time.perf_counter()
        stored = read_states(kafka, self._topic, self._registry.verifier,
                             lambda m, v: m == model and v == version,
                             partitions=sorted(self._owned), other=on_progress)  # fmt: skip
        models = self._models = self._fresh_models()
        feature_modules = self._registry.settings.feature_modules
        models.restore((key, load_state(state, feature_modules))
                       for (_, _, key), state in stored.items())  # fmt: skip
        self._position = min((progress.get(p, self._released_at) for p in self._owned),
                             default=self._released_at)  # fmt: skip
        examples.assign([TopicPartition(self._settings.topics.examples, 0, self._position)])
        logger.info("key learner of %s@%d: %d keys of partitions %s read back in %.2f s, "
                    "learning from examples offset %d", model, version, len(models.models),
                    sorted(self._owned), time.perf_counter() - started, self._position)

