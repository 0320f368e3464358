"""The scorer's models from the registry: route by each model's policy, swap between batches.

A background follower reads the `models` topic and folds it into a view. For each model this
scorer serves, the current policy compiles into a route plan (`workers.routing`; with no policy
the model's first live version answers, never a newer release by itself), and every
version the plan names (answering, shadow, and blue-green's standby colour) is loaded before the
plan is used: a loader thread fetches, verifies and unpickles snapshots off the poll loop
(PITFALLS: a slow load inside the loop leaves the group), then stages the complete
`Deployment`; `refresh()`, called between batches, swaps it in. So a batch never mixes policies
or snapshots, a policy switch lands whole (blue-green's green is already warm), and pinned
snapshots (a rollback to an earlier one) are loaded on demand.

An unpinned version serves its newest snapshot, and that only moves forward. A snapshot that
fails verification or loading is refused, counted and logged; the last good one keeps serving.
A policy that cannot be routed is refused and logged; the previous one keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Any

from riverrun.schemas import SnapshotPublished
from riverrun.workers.registry import Registry, RegistryFollower, RegistryRecord, RegistryView
from riverrun.workers.registry.spec import per_key_of
from riverrun.workers.routing import PolicyError, RoutePlan, champion_plan, plan_for
from riverrun.workers.routing.policy import champion_target
from riverrun.workers.runtime.errors import RiverrunError
from riverrun.workers.scorer.metrics import ScorerMetrics
from riverrun.workers.scorer.model.deployment import Deployment, Target
from riverrun.workers.scorer.model.keys import KeyAnswers, KeyCache, KeyStateStore
from riverrun.workers.scorer.model.protocol import RowFailure, ServedModel
from riverrun.workers.scorer.model.source import serve

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
        first_load_wait_s: float = 5.0,
        key_cache_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._cache_size = cache_size
        self._fast_path = fast_path
        self._lock = threading.Lock()
        self._view = RegistryView()
        self._active: OrderedDict[str, Deployment] = OrderedDict()
        self._staged: dict[str, Deployment] = {}
        self._wanted: set[str] = set()
        self._pending: set[str] = set()
        self._loaded: dict[SnapshotKey, ServedModel] = {}
        self._refused: dict[SnapshotKey, str] = {}
        self._bad_policies: set[tuple[str, int]] = set()
        self._retired: set[str] = set()  # models retired since the last batch: dropped then
        self._first_loads: dict[str, Future[Deployment | None]] = {}
        self._first_load_wait_s = first_load_wait_s
        self._wait_left = first_load_wait_s
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-loader")
        self._follower: RegistryFollower | None = None
        # Per-key versions' keys: the changelog is followed from the first one loaded on.
        self._key_cache_bytes = key_cache_bytes
        self._key_store: KeyStateStore | None = None
        self.key_cache: KeyCache | None = None
        self._owned: set[int] | None = None  # requests partitions owned (None: not in a group)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RegistryModelSource:
        """Read the registry to its end, then follow it in the background."""
        view = self._registry.refresh(timeout)
        with self._lock:
            self._view = view
        self._follower = self._registry.follower(self._on_record).start()
        logger.info("registry read: models %s", ", ".join(view.models()) or "none yet")
        return self

    def stop(self) -> None:
        """Stop following and loading."""
        if self._follower is not None:
            self._follower.stop()
        if self._key_store is not None:
            self._key_store.stop()
        self._loader.shutdown(wait=False, cancel_futures=True)

    # -- the ModelSource protocol ------------------------------------------------------------

    def deployment(self, name: str) -> Deployment | None:
        """The model's deployment, prepared on the loader thread; None when not servable now.

        A model's first request here waits for its load, but never longer than what is left
        of the batch's wait (`first_load_wait_s`, shared by every model first asked for in one
        batch): a slow artifact or many cold models cannot hold the others' requests up. A name
        the registry does not know is answered at once, and nothing of it is remembered.
        """
        deployment = self._active.get(name)
        if deployment is not None:
            self._active.move_to_end(name)
            return deployment
        with self._lock:
            if self._view.default_version(name) is None:  # no version can be served
                return None
            # Wanted before it is prepared: a record arriving meanwhile prepares it again.
            self._wanted.add(name)
            deployment = self._staged.pop(name, None)
            loading = self._first_loads.get(name)
            if deployment is None and loading is None:
                loading = self._first_loads[name] = self._loader.submit(self._first_load, name)
        if deployment is None and loading is not None:
            started = time.monotonic()
            try:
                deployment = loading.result(timeout=max(0.0, self._wait_left))
            except FutureTimeout:
                deployment = None
            finally:
                self._wait_left -= time.monotonic() - started
            if deployment is not None:
                with self._lock:
                    self._staged.pop(name, None)
        if deployment is not None:
            self._activate(deployment)
        return deployment

    def _first_load(self, name: str) -> Deployment | None:
        deployment = None
        try:
            deployment = self._prepare(name)
            return deployment
        finally:
            with self._lock:
                self._first_loads.pop(name, None)
                if deployment is not None:  # for the next batch, if nobody waits for it now
                    self._staged[name] = deployment

    def unavailable(self, name: str) -> RowFailure:
        """Why a request for `name` cannot be served: its dead letter's class and reason."""
        with self._lock:
            servable = self._view.default_version(name) is not None
            target = self._champion_snapshot(name)
            loading = name in self._first_loads
        if not servable:
            if self._view.retirement(name):
                return RowFailure("UnknownModel", f"model {name!r} was retired (`riverrun models "
                                  f"history {name}` says why)")
            return RowFailure("UnknownModel", f"model {name!r} has no release in the registry")
        if loading:
            return RowFailure("ModelLoading", f"model {name!r} is still loading on this scorer "
                              f"(over {self._first_load_wait_s:g} s): send it again "
                              "(`riverrun dlq resend --class ModelLoading`), or raise "
                              "RIVERRUN_SCORER__MODEL_CACHE_SIZE if models are evicted often")
        reason = self._refused.get(_key(target)) if target is not None else None
        if reason is not None:
            return RowFailure("UnknownModel", f"model {name!r}: its snapshot was refused "
                              f"({reason})")
        return RowFailure("UnknownModel", f"model {name!r} could not be loaded")

    def refresh(self) -> None:
        """Swap in deployments prepared since the last batch; called between batches only."""
        self._wait_left = self._first_load_wait_s
        if not self._staged and not self._retired:
            return
        with self._lock:
            staged, self._staged = self._staged, {}
            retired, self._retired = self._retired, set()
        for name in retired:
            if self._active.pop(name, None) is not None:
                logger.info("%s was retired: no longer served", name)
        for deployment in staged.values():
            current = self._active.get(deployment.plan.model)
            if current is not None and current.plan.sequence > deployment.plan.sequence:
                continue  # a policy never goes back
            self._activate(deployment)

    def served(self) -> list[ServedModel]:
        """Every snapshot the cached deployments hold, least recently used model first."""
        return [model for deployment in list(self._active.values())
                for model in deployment.served()]

    # -- preparing deployments ---------------------------------------------------------------

    def _on_record(self, record: RegistryRecord) -> None:
        with self._lock:
            if not self._view.apply(record):
                return
            name = record.model
            if name not in self._wanted or name in self._pending:
                return
            self._pending.add(name)
        self._loader.submit(self._prepare_staged, name)

    def _prepare_staged(self, name: str) -> None:
        with self._lock:
            self._pending.discard(name)
        try:
            deployment = self._prepare(name)
        except Exception:  # a bug in preparing must not kill the loader thread for every model
            logger.exception("preparing %s failed; its current deployment keeps serving", name)
            return
        if deployment is None:
            with self._lock:
                if self._view.retirement(name) and self._view.default_version(name) is None:
                    self._retired.add(name)
            return
        current = self._active.get(name)
        if current is not None and _same(current, deployment):
            return
        with self._lock:
            self._staged[name] = deployment

    def _champion_snapshot(self, name: str) -> SnapshotPublished | None:
        """The snapshot the champion answers with: the policy's, else the default version's.

        Called with the lock held. A policy that cannot be routed counts as none.
        """
        try:
            target = champion_target(self._view, name)
        except PolicyError:
            default = self._view.default_version(name)
            target = (default, None) if default is not None else None
        if target is None:
            return None
        version, pinned = target
        if pinned is None:
            return self._view.latest_snapshot(name, version)
        return next((s for s in self._view.snapshots(name, version) if s.snapshot == pinned),
                    None)

    def _plan(self, name: str) -> RoutePlan | None:
        with self._lock:
            policy = self._view.policy(name)
            # No policy: the first live version answers, not the latest release.
            default = self._view.default_version(name)
        try:
            return plan_for(policy, name, default)
        except PolicyError as exc:
            assert policy is not None  # noqa: S101  # only a policy can be refused
            if (name, policy.sequence) not in self._bad_policies:
                self._bad_policies.add((name, policy.sequence))
                logger.error("refused policy #%d of %s: %s; the previous one keeps serving",
                             policy.sequence, name, exc)
            current = self._active.get(name)
            if current is not None:
                return current.plan
            return champion_plan(name, default) if default is not None else None

    def _prepare(self, name: str) -> Deployment | None:
        """Load every target of the model's plan; None when one cannot be served yet."""
        plan = self._plan(name)
        if plan is None:
            return None
        current = self._active.get(name)
        served = current.by_target() if current is not None else {}
        loaded: dict[Target, ServedModel] = {}
        for target in plan.targets():
            model = self._resolve(name, target, served.get(target))
            if model is None:
                logger.warning("%s@%d%s cannot be served yet: policy #%d waits", name, target[0],
                               f"#{target[1]}" if target[1] is not None else "", plan.sequence)
                return None
            loaded[target] = model
        return Deployment.of(plan, loaded)

    def _resolve(
        self, name: str, target: Target, serving: ServedModel | None
    ) -> ServedModel | None:
        version, pinned = target
        with self._lock:
            snapshots = self._view.snapshots(name, version)
        if pinned is not None:
            candidates = [s for s in snapshots if s.snapshot == pinned]
        else:
            # The newest good snapshot, never one older than the snapshot already serving.
            floor = serving.snapshot if serving is not None else -1
            candidates = [s for s in reversed(snapshots) if s.snapshot > floor]
        for snapshot in candidates:
            key = _key(snapshot)
            if key in self._refused:
                continue
            with self._lock:
                model = self._loaded.get(key)
            if model is not None:
                return model
            try:
                model = self._load(snapshot)
            except RiverrunError:
                continue
            with self._lock:
                self._loaded[key] = model
            return model
        return serving if pinned is None else None

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
        with self._lock:
            released = self._view.version(target.model, target.version)
        served = serve(estimator, target.model, target.version, target.snapshot,
                       target.published_at.timestamp(), fast_path=self._fast_path,
                       signature=released.signature if released is not None else None)  # fmt: skip
        per_key = per_key_of(released.spec) if released is not None else None
        if per_key is not None:
            served = replace(served, keys=KeyAnswers(
                target.model, target.version, per_key, self.key_store, self._cache_of_keys(),
                classifier=served.scorer.is_classifier,
            ))  # fmt: skip
        elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.snapshot_load_seconds.labels(target.model).observe(elapsed)
        logger.info("loaded %s in %.3fs (%d bytes)", label, elapsed, target.artifact.size)
        return served

    @property
    def key_store(self) -> KeyStateStore:
        """The key states, read to their end before the first per-key version serves."""
        if self._key_store is None:
            registry = self._registry
            store = KeyStateStore(registry.kafka, registry.topics.key_states, registry.verifier,
                                  f"{registry.kafka.client_id}-key-states",
                                  self._owned).start()  # fmt: skip
            if not store.restored.wait(60.0):
                logger.warning("the key states are still being read after 60 s: keys not read "
                               "yet are answered by the global model")  # fmt: skip
            self._key_store = store
        return self._key_store

    def own_partitions(self, partitions: set[int]) -> None:
        """The requests partitions this scorer owns now: per-key versions hold their keys."""
        self._owned = set(partitions)
        if self._key_store is not None:
            self._key_store.follow(partitions)

    def keys_pending(self, partitions: set[int]) -> set[int]:
        """Of these requests partitions, those whose keys are still being read (none while no
        per-key version serves): their requests wait, so that a key is never answered by the
        global model for want of its state."""
        if self._key_store is None:
            return set()
        return self._key_store.pending(partitions)

    def key_figures(self) -> dict[str, float] | None:
        """The keys' figures for metrics; None while no per-key version has been loaded."""
        store, cache = self._key_store, self.key_cache
        if store is None or cache is None:
            return None
        stats = cache.stats
        return {"keys_held": float(store.count()), "cache_keys": float(len(cache)),
                "cache_bytes": float(cache.bytes), "restore_seconds": store.restore_seconds,
                "hits": float(stats.hits), "misses": float(stats.misses),
                "evictions": float(stats.evictions)}  # type: ignore[dict-item]  # None while reading

    def _cache_of_keys(self) -> KeyCache:
        if self.key_cache is None:
            self.key_cache = KeyCache(self._key_cache_bytes,
                                      self._registry.settings.feature_modules)  # fmt: skip
        return self.key_cache

    # -- activation --------------------------------------------------------------------------

    def _activate(self, deployment: Deployment) -> None:
        name = deployment.plan.model
        previous = self._active.get(name)
        self._active[name] = deployment
        self._active.move_to_end(name)
        before = {m.label: m for m in previous.served()} if previous is not None else {}
        after = {m.label: m for m in deployment.served()}
        for label, model in after.items():
            if label not in before:
                logger.info("now serving %s", label)
                if self._metrics is not None:
                    self._metrics.model_info.labels(
                        model.name, str(model.version), str(model.snapshot)).set(1)
        for label, model in before.items():
            if label not in after and self._metrics is not None:
                self._metrics.model_info.remove(model.name, str(model.version),
                                                str(model.snapshot))
        if previous is not None and self._metrics is not None and before.keys() != after.keys():
            self._metrics.snapshot_swaps.labels(name).inc()
        if previous is None or previous.plan.sequence != deployment.plan.sequence:
            shares = ", ".join(f"{r['route']} v{r['version']} {float(r['weight']):.0%}"  # type: ignore[arg-type]  # a float
                               for r in deployment.plan.describe(time.time()))
            logger.info("routing %s by policy #%d (%s): %s", name, deployment.plan.sequence,
                        deployment.plan.strategy, shares)
        while len(self._active) > self._cache_size:
            evicted, old = self._active.popitem(last=False)
            with self._lock:
                self._wanted.discard(evicted)
            logger.info("evicted %s from the model cache (least recently used)", evicted)
            if self._metrics is not None:
                for model in old.served():
                    self._metrics.model_info.remove(model.name, str(model.version),
                                                    str(model.snapshot))
        self._prune()

    def _prune(self) -> None:
        # Keep loaded snapshots only while a cached or staged deployment holds them.
        with self._lock:
            held = {(m.name, m.version, m.snapshot)
                    for d in (*self._active.values(), *self._staged.values()) for m in d.served()}
            for key in [k for k in self._loaded if k not in held]:
                del self._loaded[key]


def _same(a: Deployment, b: Deployment) -> bool:
    return a.plan.sequence == b.plan.sequence and [m.label for m in a.served()] == [
        m.label for m in b.served()
    ]
