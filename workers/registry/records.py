"""Keys and decoding of the records on the compacted `models` topic.

Compaction keeps the latest record per key, so each fact has its own key: a version release,
each snapshot of a version, and a model's policy (only the latest policy matters). Numbers are
zero-padded so keys sort in the order of the facts they name.
"""

from __future__ import annotations

from riverrun.schemas import (
    DecodeError,
    DriftDetected,
    ModelRetired,
    ModelVersionReleased,
    PolicyChanged,
    SnapshotPublished,
    decode,
)
from riverrun.schemas.codec import parse_json

RegistryRecord = (
    ModelVersionReleased | SnapshotPublished | PolicyChanged | DriftDetected | ModelRetired
)

_KINDS: dict[str, type[RegistryRecord]] = {
    "version": ModelVersionReleased,
    "snapshot": SnapshotPublished,
    "policy": PolicyChanged,
    "drift": DriftDetected,
    "retired": ModelRetired,
}

# Generous for a spec, metrics and a policy; a registry record never carries model bytes, and a
# record's size bounds what each worker holds of it.
MAX_RECORD_BYTES = 64 * 1024


def lineage_key(examples_topic: str) -> str:
    """Return the lineage key of the examples log in a snapshot record: `<topic>:0`."""
    return f"{examples_topic}:0"


def version_key(model: str, version: int) -> bytes:
    """Key of a version release: `model/v/0000000003`."""
    return f"{model}/v/{version:010d}".encode()


def snapshot_key(model: str, version: int, snapshot: int) -> bytes:
    """Key of one snapshot of a version: `model/s/0000000003/000000000000`."""
    return f"{model}/s/{version:010d}/{snapshot:012d}".encode()


def policy_key(model: str) -> bytes:
    """Key of a model's policy; compaction keeps only the latest."""
    return f"{model}/p".encode()


def drift_key(record: DriftDetected) -> bytes:
    """Key of one drift detection: compaction keeps every one."""
    stamp = int(record.detected_at.timestamp() * 1_000_000)
    return f"{record.model}/d/{record.version:010d}/{record.stream}/{stamp:020d}".encode()


def retired_key(model: str, version: int | None) -> bytes:
    """Key of a retirement: `model/r` for the whole model, `model/r/0000000003` for a version."""
    return f"{model}/r".encode() if version is None else f"{model}/r/{version:010d}".encode()


def key_of(record: RegistryRecord) -> bytes:
    """The key a registry record is written under."""
    if isinstance(record, DriftDetected):
        return drift_key(record)
    if isinstance(record, ModelRetired):
        return retired_key(record.model, record.version)
    if isinstance(record, ModelVersionReleased):
        return version_key(record.model, record.version)
    if isinstance(record, SnapshotPublished):
        return snapshot_key(record.model, record.version, record.snapshot)
    return policy_key(record.model)


def decode_registry_record(raw: bytes | None) -> RegistryRecord:
    """Decode a `models` record by its `kind` field.

    Raises:
        schemas.DecodeError: not JSON, an unknown `kind`, or an invalid record.

    """
    data = parse_json(raw, MAX_RECORD_BYTES)
    if not isinstance(data, dict):
        raise DecodeError("InvalidEvent", "a registry record must be a JSON object", raw)
    kind = data.get("kind")
    event_type = _KINDS.get(kind) if isinstance(kind, str) else None
    if event_type is None:
        raise DecodeError(
            "UnknownKind",
            f"registry record kind {kind!r} is not one of {', '.join(sorted(_KINDS))}",
            raw,
        )
    return decode(event_type, raw, MAX_RECORD_BYTES)
