"""Keys on demand in the scorer: the changelog followed into a store, live models in a cache.

`KeyStateStore` follows the key-state changelog in a thread of its own, keeping each key's
latest record still pickled (verified once, as it arrives). `KeyCache` holds the live models of
the keys asked for, bounded by their records' bytes, least recently used out first; a key asked
for once is answered but only kept when asked for again (a door keeper: one-off keys do not
push the regulars out). `KeyAnswers` blends a version's keys into a scored batch: a key with a
state of its own gets `w * its own + (1 - w) * global`; any other key the global answer as it is.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from riverrun.schemas import KafkaSettings
from riverrun.workers.keys.changelog import (
    ROLE,
    KeyStateCheck,
    StoredKeyState,
    changelog_reader,
    load_state,
    parse_state_key,
)
from riverrun.workers.keys.model import blend, most_probable, weight
from riverrun.workers.registry.loading import RefusedArtifact
from riverrun.workers.registry.signing import Signer
from riverrun.workers.registry.spec import PerKey
from riverrun.workers.runtime.errors import RiverrunError
from riverrun.workers.runtime.kafka import topic_partitions, watermarks
from riverrun.workers.scorer.model.protocol import Features, ScoredBatch

logger = logging.getLogger(__name__)

VersionKey = tuple[str, int]


@dataclass
class KeyStats:
    """What the key cache did, for the scorer's metrics."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0


class KeyStateStore:
    """The latest state of the keys of some changelog partitions, followed in the background.

    A scorer holds the keys of the changelog partitions numbered as the requests partitions it
    owns (`follow`, at each rebalance); without `partitions`, every partition's.
    """

    def __init__(
        self, kafka: KafkaSettings, topic: str, signer: Signer | None, client_id: str,
        partitions: Iterable[int] | None = None,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._check = KeyStateCheck(signer)
        self._client_id = client_id
        self.states: dict[VersionKey, dict[str, StoredKeyState]] = {}
        self.restored = threading.Event()
        self.restore_seconds: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owned: set[int] | None = set(partitions) if partitions is not None else None
        self._lock = threading.Lock()
        self._requested: set[int] | None = None  # partitions to hold from the next poll on
        self._ids: set[int] = set()  # the changelog's partitions
        self._ends: dict[int, int] = {}  # where each partition read is caught up
        self._behind: set[int] = set()
        self.caught_up: set[int] = set()  # partitions read to their end as of their assignment
        self.failed = False

    def follow(self, partitions: Iterable[int]) -> None:
        """Hold the keys of these partitions from now on (those of others are dropped)."""
        with self._lock:
            self._requested = set(partitions)

    def start(self) -> KeyStateStore:
        """Read the changelog to its end in the background, then keep following it."""
        self._thread = threading.Thread(target=self._run, name="key-states", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def get(self, model: str, version: int, key: str) -> StoredKeyState | None:
        """A key's latest state; None for a key without one (or not read yet)."""
        held = self.states.get((model, version))
        return held.get(key) if held is not None else None

    def count(self) -> int:
        """Keys held, every version together."""
        return sum(len(held) for held in self.states.values())

    def pending(self, partitions: Iterable[int]) -> set[int]:
        """Of these partitions, those whose keys are not read to their end yet."""
        if self.failed:
            return set()  # nothing more will be read: hold nothing back for it
        caught_up = self.caught_up
        return {p for p in partitions if p not in caught_up}

    def _run(self) -> None:
        started = time.perf_counter()
        reader = changelog_reader(self._kafka, self._client_id)
        try:
            self._ids = set(topic_partitions(reader, self._topic, ROLE))
            with self._lock:
                requested, self._requested = self._requested, None
            if requested is not None:
                self._owned = requested
            held = self._ids if self._owned is None else self._ids & self._owned
            self._read_from_start(reader, held, assign=reader.assign)
            if not self._behind:
                self._restored(started)
            while not self._stop.is_set():
                with self._lock:
                    requested, self._requested = self._requested, None
                if requested is not None:
                    held = self._move(reader, held, self._ids & requested)
                for record in reader.consume(10_000, 0.2):
                    err = record.error()
                    partition = record.partition()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            self._caught_up(partition, started)
                        continue
                    self._take(record.key() or b"", record.value(), record.headers(),
                               partition)  # fmt: skip
                    if (record.offset() or 0) + 1 >= self._ends.get(partition, 0):
                        self._caught_up(partition, started)
        except RiverrunError as exc:
            logger.error("cannot follow the key states (%s): keys are answered by the global "
                         "model until the scorer restarts", exc)  # fmt: skip
            self.failed = True
            self.restored.set()
        finally:
            reader.close()

    def _read_from_start(self, reader: Any, partitions: set[int], assign: Any) -> None:
        """Read these partitions from their start; each is caught up at its end of now."""
        deadline = time.monotonic() + 60.0
        for p in partitions:
            end = watermarks(reader, TopicPartition(self._topic, p), deadline)[1]
            self._ends[p] = end
            if end > 0:
                self._behind.add(p)
            else:
                self.caught_up.add(p)
        assign([TopicPartition(self._topic, p, 0) for p in sorted(partitions)])

    def _caught_up(self, partition: int, started: float) -> None:
        if partition not in self._behind:
            return
        self._behind.discard(partition)
        self.caught_up.add(partition)
        if not self.restored.is_set() and not self._behind:
            self._restored(started)

    def _move(self, reader: Any, held: set[int], wanted: set[int]) -> set[int]:
        """Stop following the partitions no longer owned, start reading the new ones."""
        gone, new = held - wanted, wanted - held
        if gone:
            reader.incremental_unassign([TopicPartition(self._topic, p) for p in sorted(gone)])
            self._behind -= gone
            self.caught_up -= gone
            for states in self.states.values():
                for key in [k for k, s in states.items() if s.partition in gone]:
                    del states[key]
        if new:
            self._read_from_start(reader, new, assign=reader.incremental_assign)
        if gone or new:
            logger.info("key states: following partitions %s (%d keys held)", sorted(wanted),
                        self.count())  # fmt: skip
        return wanted

    def _restored(self, started: float) -> None:
        self.restore_seconds = time.perf_counter() - started
        self.restored.set()
        logger.info("key states read from %s: %d keys in %.2f s", self._topic, self.count(),
                    self.restore_seconds)  # fmt: skip

    def _take(
        self, record_key: bytes, value: bytes | None, headers: Any, partition: int = 0
    ) -> None:
        parsed = parse_state_key(record_key)
        if parsed is None:
            return
        model, version, key = parsed
        held = self.states.get((model, version))
        stored = self._check(record_key, value, headers, partition)
        if stored is None:
            if held is not None:
                held.pop(key, None)  # a tombstone: the key expired
            return
        if held is None:
            held = self.states[(model, version)] = {}
        held[key] = stored


class KeyCache:
    """Live models of the keys asked for, bounded by their records' bytes (LRU, door keeper)."""

    def __init__(self, max_bytes: int, feature_modules: Sequence[str] = ()) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = KeyStats()
        self._feature_modules = tuple(feature_modules)
        # (model, version, key) -> (examples of the state loaded, its model, its record's bytes)
        self._live: OrderedDict[tuple[str, int, str], tuple[int, Any, int]] = OrderedDict()
        self._asked_once: OrderedDict[tuple[str, int, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    def model(self, stored: StoredKeyState) -> Any | None:
        """The live model of a stored state (loaded on a miss); None when it does not load."""
        name = (stored.model, stored.version, stored.key)
        live = self._live.get(name)
        examples = stored.counts.examples
        if live is not None and live[0] == examples:
            self._live.move_to_end(name)
            self.stats.hits += 1
            return live[1]
        self.stats.misses += 1
        try:
            estimator = load_state(stored, self._feature_modules).estimator
        except RefusedArtifact as exc:
            logger.error("the state of key %r of %s@%d is refused (%s): the global model answers",
                         stored.key, stored.model, stored.version, exc)  # fmt: skip
            return None
        size = len(stored.value)
        if live is not None:  # a newer state of a key held: replace it
            self.bytes -= live[2]
            del self._live[name]
        elif name not in self._asked_once and self.bytes + size > self.max_bytes:
            self._asked_once[name] = None  # admitted the next time it is asked for
            if len(self._asked_once) > 100_000:
                self._asked_once.popitem(last=False)
            return estimator
        self._asked_once.pop(name, None)
        self._live[name] = (examples, estimator, size)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._live) > 1:
            _, (_, _, dropped) = self._live.popitem(last=False)
            self.bytes -= dropped
            self.stats.evictions += 1
        return estimator


class KeyAnswers:
    """The keys of one per-key version, blended into the global model's answers."""

    def __init__(
        self, model: str, version: int, per_key: PerKey, store: KeyStateStore, cache: KeyCache,
        *, classifier: bool,
    ) -> None:
        self.model = model
        self.version = version
        self.per_key = per_key
        self._store = store
        self._cache = cache
        self._classifier = classifier

    def blend_into(
        self, scored: ScoredBatch, rows: Sequence[Features], keys: Sequence[str | None]
    ) -> list[tuple[int, float] | None]:
        """Blend each row's key's own answer into `scored`; per row, (examples, weight) or None.

        A row whose key has no state (or whose key's model fails) keeps the global answer.
        """
        used: list[tuple[int, float] | None] = [None] * len(rows)
        held = self._store.states.get((self.model, self.version))
        if not held:
            return used
        failures, predictions, probas = scored.failures, scored.predictions, scored.probas
        model_of, per_key, classifier = self._cache.model, self.per_key, self._classifier
        for k, key in enumerate(keys):
            if key is None or (failures and k in failures):
                continue
            stored = held.get(key)
            if stored is None:
                continue
            examples = stored.counts.examples
            w = weight(examples, per_key)
            if w <= 0.0:
                continue
            estimator = model_of(stored)
            if estimator is None:
                continue
            try:
                if classifier:
                    local = estimator.predict_proba_one(dict(rows[k]))
                    if not local or not all(math.isfinite(p) for p in local.values()):
                        continue
                    # Probabilities travel keyed by the class's text, as the global ones are.
                    proba = blend({str(c): p for c, p in local.items()}, probas[k] or {}, w)
                    best = most_probable(proba)
                    probas[k] = proba
                    if str(predictions[k]) != best:
                        classes = {str(c): c for c in local}
                        predictions[k] = classes.get(best, best)
                else:
                    own = float(estimator.predict_one(dict(rows[k])))
                    predictions[k] = w * own + (1.0 - w) * float(predictions[k])  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001  # a key's model must not fail the request
                logger.warning("the model of key %r of %s@%d raised (%s: %s): the global model "
                               "answers", key, self.model, self.version, type(exc).__name__, exc)
                continue
            used[k] = (examples, w)
        return used

