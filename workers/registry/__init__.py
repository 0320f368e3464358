"""The model registry on Kafka: specs, signed artifacts, releases, snapshots and policies."""

from __future__ import annotations

from riverrun.workers.registry.artifact import (
    ArtifactStore,
    ArtifactTooLarge,
    ArtifactUnavailable,
    FileArtifactStore,
    KafkaArtifactStore,
    artifact_store,
    dump_model,
)
from riverrun.workers.registry.client import (
    Registry,
    RegistryFollower,
    RegistrySettings,
    read_registry,
)
from riverrun.workers.registry.loading import (
    RefusedArtifact,
    open_artifact,
    scan_artifact,
    seal,
    snapshot_subject,
)
from riverrun.workers.registry.records import (
    RegistryRecord,
    decode_registry_record,
    policy_key,
    snapshot_key,
    version_key,
)
from riverrun.workers.registry.signing import Signer
from riverrun.workers.registry.spec import (
    ModelSpec,
    SpecError,
    WarmStart,
    build_estimator,
    load_spec,
)
from riverrun.workers.registry.view import RegistryView

__all__ = [
    "ArtifactStore",
    "ArtifactTooLarge",
    "ArtifactUnavailable",
    "FileArtifactStore",
    "KafkaArtifactStore",
    "ModelSpec",
    "RefusedArtifact",
    "Registry",
    "RegistryFollower",
    "RegistryRecord",
    "RegistrySettings",
    "RegistryView",
    "Signer",
    "SpecError",
    "WarmStart",
    "artifact_store",
    "build_estimator",
    "decode_registry_record",
    "dump_model",
    "load_spec",
    "open_artifact",
    "policy_key",
    "read_registry",
    "scan_artifact",
    "seal",
    "snapshot_key",
    "snapshot_subject",
    "version_key",
]
