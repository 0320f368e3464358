"""`RegistryView`: what the `models` topic says, folded in memory from its records (no I/O).

Monotonic by construction: the latest snapshot of a version is the highest snapshot id seen, so
a late record of a lower id never replaces it; a record of an id already seen replaces it only
when it was published later (a republished snapshot, which compaction also keeps), never when
it is a replayed duplicate or an older copy. A policy replaces the current one only with a higher
sequence. Replays, duplicates and out-of-order delivery are therefore harmless.
"""

from __future__ import annotations

from collections.abc import Iterable

from riverrun.schemas import DriftDetected, ModelVersionReleased, PolicyChanged, SnapshotPublished
from riverrun.workers.registry.records import RegistryRecord


class RegistryView:
    """An in-memory fold of registry records; `apply` them in topic order."""

    def __init__(self, records: Iterable[RegistryRecord] = ()) -> None:
        self._versions: dict[str, dict[int, ModelVersionReleased]] = {}
        self._snapshots: dict[tuple[str, int], dict[int, SnapshotPublished]] = {}
        self._policies: dict[str, PolicyChanged] = {}
        self._history: dict[str, list[RegistryRecord]] = {}
        self._drifts: dict[str, list[DriftDetected]] = {}
        for record in records:
            self.apply(record)

    def apply(self, record: RegistryRecord) -> bool:
        """Fold one record in; return whether it changed what the view answers."""
        self._history.setdefault(record.model, []).append(record)
        if isinstance(record, DriftDetected):
            self._drifts.setdefault(record.model, []).append(record)
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
        self._policies[record.model] = record
        return True

    def models(self) -> list[str]:
        """Every model with at least one record, sorted."""
        return sorted(self._history)

    def versions(self, model: str) -> list[ModelVersionReleased]:
        """A model's released versions, oldest first."""
        versions = self._versions.get(model, {})
        return [versions[v] for v in sorted(versions)]

    def version(self, model: str, version: int) -> ModelVersionReleased | None:
        """One version's release record, if released."""
        return self._versions.get(model, {}).get(version)

    def latest_version(self, model: str) -> int | None:
        """The highest released version number of a model, None when it has none."""
        versions = self._versions.get(model)
        return max(versions) if versions else None

    def snapshots(self, model: str, version: int) -> list[SnapshotPublished]:
        """A version's snapshots, lowest snapshot id first."""
        snapshots = self._snapshots.get((model, version), {})
        return [snapshots[s] for s in sorted(snapshots)]

    def latest_snapshot(self, model: str, version: int | None = None) -> SnapshotPublished | None:
        """The highest snapshot of a version (the latest version when None)."""
        if version is None:
            version = self.latest_version(model)
            if version is None:
                return None
        snapshots = self._snapshots.get((model, version))
        return snapshots[max(snapshots)] if snapshots else None

    def policy(self, model: str) -> PolicyChanged | None:
        """The model's current policy (highest sequence seen), None when it has none."""
        return self._policies.get(model)

    def drifts(self, model: str) -> list[DriftDetected]:
        """Drift detections of a model, in the order they were applied."""
        return list(self._drifts.get(model, []))

    def history(self, model: str) -> list[RegistryRecord]:
        """Every record of a model in the order it was applied, duplicates included."""
        return list(self._history.get(model, []))
