"""riverrun's event contracts, their codec and the settings sections every process shares."""

from __future__ import annotations

from schemas.codec import DecodeError, decode, decode_request, encode, encode_dict, parse_json
from schemas.events import (
    EVENTS,
    SCHEMA_VERSION,
    ArtifactRef,
    DeadLetter,
    Event,
    LabelObserved,
    ModelName,
    ModelVersionReleased,
    OutcomeRecorded,
    PolicyAssignment,
    PolicyChanged,
    PredictionMade,
    PredictionRequested,
    SnapshotId,
    SnapshotPublished,
    Version,
    utc_now,
)
from schemas.settings import (
    KafkaSettings,
    TopicSettings,
    add_section_flags,
    collect_section_flags,
)

__all__ = [
    "EVENTS",
    "SCHEMA_VERSION",
    "ArtifactRef",
    "DeadLetter",
    "DecodeError",
    "Event",
    "KafkaSettings",
    "LabelObserved",
    "ModelName",
    "ModelVersionReleased",
    "OutcomeRecorded",
    "PolicyAssignment",
    "PolicyChanged",
    "PredictionMade",
    "PredictionRequested",
    "SnapshotId",
    "SnapshotPublished",
    "TopicSettings",
    "Version",
    "add_section_flags",
    "collect_section_flags",
    "decode",
    "decode_request",
    "encode",
    "encode_dict",
    "parse_json",
    "utc_now",
]
