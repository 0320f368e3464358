"""The scorer's models from the registry: load on first request, swap new snapshots between batches.

A background follower reads the `models` topic and folds it into a view. When a snapshot newer
than the one served arrives for a model this scorer serves, a loader thread fetches, verifies
and unpickles it off the poll loop (PITFALLS: a slow load inside the loop leaves the group);
`refresh()`, called between batches, swaps it in. A batch therefore never mixes snapshots, and
a model's served snapshot only moves forward. A snapshot that fails verification or loading is
refused, counted and logged; the last good one keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas import SnapshotPublished
from workers.errors import RiverrunError
from workers.metrics import ScorerMetrics
from workers.model.model_file import expected_features_of
from workers.model.readonly import freeze_for_scoring
from workers.model.scoring import ServedModel, build_scorer
from workers.registry import Registry, RegistryFollower, RegistryRecord, RegistryView

logger = logging.getLogger(__name__)

SnapshotKey = tuple[str, int, int]


def _key(snapshot: SnapshotPublished) -> SnapshotKey:
    return (snapshot.model, snapshot.version, snapshot.snapshot)


class RegistryModelSource:
    """Serves whichever released models the requests name, a bounded number at a time."""

    def __init__(
        self,
        registry: Registry,
        metrics: ScorerMetrics | None = None,
        *,
        cache_size: int = 8,
        fast_path: bool = True,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._cache_size = cache_size
        self._fast_path = fast_path
        self._lock = threading.Lock()
        self._view = RegistryView()
        self._active: OrderedDict[str, ServedModel] = OrderedDict()
        self._staged: dict[str, ServedModel] = {}
        self._loading: set[SnapshotKey] = set()
        self._refused: dict[SnapshotKey, str] = {}
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-loader")
        self._follower: RegistryFollower | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RegistryModelSource:
        """Read the registry to its end, then follow it in the background."""
        view = self._registry.refresh(timeout)
        with self._lock:
            self._view = view
        self._follower = RegistryFollower(
            self._registry.kafka, self._registry.topics, self._on_record
        ).start()
        logger.info("registry read: models %s", ", ".join(view.models()) or "none yet")
        return self

    def stop(self) -> None:
        """Stop following and loading."""
        if self._follower is not None:
            self._follower.stop()
        self._loader.shutdown(wait=False, cancel_futures=True)

    # -- the ModelSource protocol ------------------------------------------------------------

    def get(self, name: str) -> ServedModel | None:
        """The snapshot served for `name`, loading it the first time; None when not released."""
        served = self._active.get(name)
        if served is not None:
            self._active.move_to_end(name)
            return served
        with self._lock:
            target = self._target(name)
        if target is None or _key(target) in self._refused:
            return None
        try:
            served = self._load(target)
        except RiverrunError:
            return None
        self._activate(served)
        return served

    def unavailable_reason(self, name: str) -> str:
        """Why a request for `name` cannot be served, for its dead letter."""
        with self._lock:
            target = self._target(name)
        if target is None:
            return f"model {name!r} has no release in the registry"
        reason = self._refused.get(_key(target))
        if reason is not None:
            return f"model {name!r}: its snapshot was refused ({reason})"
        return f"model {name!r} could not be loaded"

    def refresh(self) -> None:
        """Swap in snapshots loaded since the last batch; called between batches only."""
        if not self._staged:
            return
        with self._lock:
            staged, self._staged = self._staged, {}
        for name, served in staged.items():
            current = self._active.get(name)
            if current is not None and (current.version, current.snapshot) >= (
                served.version,
                served.snapshot,
            ):
                continue  # never move back
            self._activate(served)
            logger.info("now serving %s", served.label)

    def served(self) -> list[ServedModel]:
        """The snapshots in the cache, least recently used first."""
        return list(self._active.values())

    # -- internals ---------------------------------------------------------------------------

    def _target(self, name: str) -> SnapshotPublished | None:
        # The policy's champion when there is one, else the latest version; its newest snapshot.
        policy = self._view.policy(name)
        version = None
        if policy is not None:
            champions = [a for a in policy.assignments if a.role == "champion"] or list(
                policy.assignments
            )
            version = champions[0].version
            if champions[0].snapshot is not None:
                for snapshot in self._view.snapshots(name, version):
                    if snapshot.snapshot == champions[0].snapshot:
                        return snapshot
        return self._view.latest_snapshot(name, version)

    def _on_record(self, record: RegistryRecord) -> None:
        with self._lock:
            if not self._view.apply(record):
                return
            name = record.model
            if name not in self._active:
                return  # loaded on its first request
            target = self._target(name)
            if target is None or _key(target) in self._loading or _key(target) in self._refused:
                return
            current = self._active[name]
            if (current.version, current.snapshot) >= (target.version, target.snapshot):
                return
            self._loading.add(_key(target))
        self._loader.submit(self._load_staged, target)

    def _load_staged(self, target: SnapshotPublished) -> None:
        try:
            served = self._load(target)
        except RiverrunError:
            return
        finally:
            with self._lock:
                self._loading.discard(_key(target))
        with self._lock:
            self._staged[target.model] = served

    def _load(self, target: SnapshotPublished) -> ServedModel:
        label = f"{target.model}@{target.version}#{target.snapshot}"
        started = time.perf_counter()
        try:
            estimator: Any = self._registry.load(target)
        except RiverrunError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            self._refused[_key(target)] = reason
            error_class = getattr(exc, "error_class", type(exc).__name__)
            if self._metrics is not None:
                self._metrics.refused_snapshots.labels(target.model, error_class).inc()
            logger.error("refused snapshot %s: %s; the last good snapshot keeps serving",
                         label, reason)
            raise
        estimator = freeze_for_scoring(estimator)
        served = ServedModel(
            name=target.model,
            version=target.version,
            snapshot=target.snapshot,
            scorer=build_scorer(estimator, fast_path=self._fast_path),
            estimator=estimator,
            expected_features=expected_features_of(estimator),
            published_at=target.published_at.timestamp(),
        )
        elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.snapshot_load_seconds.labels(target.model).observe(elapsed)
        logger.info("loaded %s in %.3fs (%d bytes)", label, elapsed, target.artifact.size)
        return served

    def _activate(self, served: ServedModel) -> None:
        previous = self._active.get(served.name)
        self._active[served.name] = served
        self._active.move_to_end(served.name)
        if self._metrics is not None:
            if previous is not None:
                self._metrics.model_info.remove(
                    previous.name, str(previous.version), str(previous.snapshot)
                )
                self._metrics.snapshot_swaps.labels(served.name).inc()
            self._metrics.model_info.labels(
                served.name, str(served.version), str(served.snapshot)
            ).set(1)
        while len(self._active) > self._cache_size:
            evicted, old = self._active.popitem(last=False)
            logger.info("evicted %s from the model cache (least recently used)", old.label)
            if self._metrics is not None:
                self._metrics.model_info.remove(evicted, str(old.version), str(old.snapshot))
