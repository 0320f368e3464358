"""`RegistryView`: what the `models` topic says, folded in memory from its records (no I/O).

Monotonic by construction: the latest snapshot of a version is the highest snapshot id seen, so
a late record of a lower id never replaces it; a record of an id already seen replaces it only
when it was published later (a republished snapshot, which compaction also keeps), never when
it is a replayed duplicate or an older copy. A policy replaces the current one only with a higher
sequence. Replays, duplicates and out-of-order delivery are therefore harmless.

A retirement hides what it retires for good: the model's versions up to its `last_version`
(and their policy), or the one version it names. Versions released after it are live again.
"""

from __future__ import annotations

from collections.abc import Iterable

from riverrun.schemas import (
    DriftDetected,
    ModelRetired,
    ModelVersionReleased,
    PolicyChanged,
    SnapshotPublished,
)
from riverrun.workers.registry.records import RegistryRecord

# Drift detections kept per model: the recent ones are what operators and `top` read.
MAX_DRIFTS = 100


class RegistryView:
    """An in-memory fold of registry records; `apply` them in topic order.

    Workers keep only what serving needs; `history=True` (the `models history` command) keeps
    every record as well.
    """

    def __init__(self, records: Iterable[RegistryRecord] = (), *, history: bool = False) -> None:
        self._keep_history = history
        self._versions: dict[str, dict[int, ModelVersionReleased]] = {}
        self._snapshots: dict[tuple[str, int], dict[int, SnapshotPublished]] = {}
        self._policies: dict[str, PolicyChanged] = {}
        self._history: dict[str, list[RegistryRecord]] = {}
        self._drifts: dict[str, list[DriftDetected]] = {}
        # Per model: versions up to this are retired (the whole model), and single versions.
        self._retired_through: dict[str, int] = {}
        self._retired: dict[str, set[int]] = {}
        self._retired_policy: dict[str, int] = {}  # policies up to this sequence are retired
        for record in records:
            self.apply(record)

    def apply(self, record: RegistryRecord) -> bool:
        """Fold one record in; return whether it changed what the view answers."""
        if self._keep_history:
            self._history.setdefault(record.model, []).append(record)
        if isinstance(record, ModelRetired):
            return self._retire(record)
        if self._is_retired(record.model, getattr(record, "version", None)):
            return False
        if isinstance(record, DriftDetected):
            drifts = self._drifts.setdefault(record.model, [])
            drifts.append(record)
            del drifts[:-MAX_DRIFTS]
            return False  # informs operators and the judge; nothing served changes
        if isinstance(record, ModelVersionReleased):
            versions = self._versions.setdefault(record.model, {})
            if record.version in versions:
                return False
            versions[record.version] = record
            return True
        if isinstance(record, SnapshotPublished):
            snapshots = self._snapshots.setdefault((record.model, record.version), {})
            seen = snapshots.get(record.snapshot)
            if seen is not None and record.published_at <= seen.published_at:
                return False
            snapshots[record.snapshot] = record
            return True
        current = self._policies.get(record.model)
        if current is not None and current.sequence >= record.sequence:
            return False
        if record.sequence <= self._retired_policy.get(record.model, 0):
            return False
        self._policies[record.model] = record
        return True

    def _retire(self, record: ModelRetired) -> bool:
        model = record.model
        if record.version is None:
            if record.last_version <= self._retired_through.get(model, 0) and model not in (
                self._versions
            ):
                return False
            self._retired_through[model] = max(record.last_version,
                                               self._retired_through.get(model, 0))
            policy = self._policies.pop(model, None)
            if policy is not None:
                self._retired_policy[model] = max(policy.sequence,
                                                  self._retired_policy.get(model, 0))
            retired = {v for v in self._versions.get(model, {}) if v <= record.last_version}
        else:
            self._retired.setdefault(model, set()).add(record.version)
            retired = {record.version}
        versions = self._versions.get(model, {})
        for version in retired:
            versions.pop(version, None)
            self._snapshots.pop((model, version), None)
        if not versions:
            self._versions.pop(model, None)
        if version is None or not self._versions.get(model):
            for key in [k for k in self._snapshots if k[0] == model and self._is_retired(*k)]:
                self._snapshots.pop(key, None)
        self._drifts[model] = [d for d in self._drifts.get(model, [])
                               if d.version not in retired]  # fmt: skip
        return True

    def _is_retired(self, model: str, version: int | None) -> bool:
        if version is None:
            return False
        return version <= self._retired_through.get(model, 0) or version in self._retired.get(
            model, ()
        )

    def retirement(self, model: str) -> int:
        """The highest version retired with the whole model (0 when never retired)."""
        return self._retired_through.get(model, 0)

    def next_version(self, model: str) -> int:
        """The number the next release of `model` takes: after every version ever released."""
        released = max(self._versions.get(model, {}), default=0)
        return max(released, self.latest_version(model) or 0,
                   self._retired_through.get(model, 0),
                   max(self._retired.get(model, ()), default=0)) + 1

    def models(self) -> list[str]:
        """Every model with a live release or policy, sorted (retired ones are gone)."""
        with_snapshots = {model for model, _version in self._snapshots}
        return sorted(set(self._versions) | set(self._policies) | with_snapshots)

    def versions(self, model: str) -> list[ModelVersionReleased]:
        """A model's released versions, oldest first."""
        versions = self._versions.get(model, {})
        return [versions[v] for v in sorted(versions)]

    def version(self, model: str, version: int) -> ModelVersionReleased | None:
        """One version's release record, if released."""
        return self._versions.get(model, {}).get(version)

    def latest_version(self, model: str) -> int | None:
        """The highest version of a model that can be served (it has a snapshot), else None.

        The newest release, for numbering and listing; not what answers with no policy
        (`default_version`).

        A snapshot is proof enough of its version: a release record deleted (a tombstone,
        compacted away) or never read changes nothing served. A release with no snapshot yet
        is not a version to serve.
        """
        served = [version for (name, version) in self._snapshots if name == model]
        return max(served) if served else None

    def default_version(self, model: str) -> int | None:
        """The version that answers when no policy names one: the first live version, else None.

        The lowest version that can be served (it has a snapshot) and is not retired. A release
        takes no traffic until a policy names it, so with no policy the first version keeps
        answering whatever is released after it; retiring it passes the traffic to the next.
        """
        served = [version for (name, version) in self._snapshots
                  if name == model and not self._is_retired(model, version)]
        return min(served) if served else None

    def snapshots(self, model: str, version: int) -> list[SnapshotPublished]:
        """A version's snapshots, lowest snapshot id first."""
        snapshots = self._snapshots.get((model, version), {})
        return [snapshots[s] for s in sorted(snapshots)]

    def latest_snapshot(self, model: str, version: int | None = None) -> SnapshotPublished | None:
        """The highest snapshot of a version (the latest version when None).

        The latest version is the newest release, not what answers: pass `default_version`
        (or the policy's version) for the snapshot that serves.
        """
        if version is None:
            version = self.latest_version(model)
            if version is None:
                return None
        snapshots = self._snapshots.get((model, version))
        return snapshots[max(snapshots)] if snapshots else None

    def policy(self, model: str) -> PolicyChanged | None:
        """The model's current policy (highest sequence seen), None when it has none."""
        return self._policies.get(model)

    def policy_sequence(self, model: str) -> int:
        """The highest policy sequence the model has had, a retired policy's included; 0: none.

        A new policy takes the next one: a view ignores policies at or below a retired one's.
        """
        current = self._policies.get(model)
        return max(current.sequence if current is not None else 0,
                   self._retired_policy.get(model, 0))

    def drifts(self, model: str) -> list[DriftDetected]:
        """Drift detections of a model, in the order they were applied."""
        return list(self._drifts.get(model, []))

    def history(self, model: str) -> list[RegistryRecord]:
        """Every record of a model in the order it was applied, duplicates included."""
        return list(self._history.get(model, []))
