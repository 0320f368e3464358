"""The public face of each package, locked: a name added to or dropped from an `__all__` is a
change of the API a user imports, and must show up here."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

# What an upstream or downstream service imports: the client and the contracts.
PRODUCERS = [
    "ClientError", "Delivery", "DeliveryError", "KafkaSettings", "PredictionRefused",
    "PredictionTimeout",
    "RiverrunClient", "TopicSettings",
]  # fmt: skip
SCHEMAS = [
    "EVENTS", "SCHEMA_VERSION", "ArtifactRef", "CanaryStep", "DeadLetter", "DecodeError",
    "DriftDetected", "Event", "ExampleJoined", "FeatureSignature", "KafkaSettings", "LabelFields", "LabelObserved",
    "ModelName", "ModelRetired", "ModelVersionReleased", "OutcomeRecorded", "PairedLoss", "PolicyAssignment", "PolicyChanged",
    "PredictionFields", "PredictionMade", "PredictionRequested", "RequestFields",
    "RiverrunSettings", "Signature", "SnapshotId", "SnapshotPublished", "TopicSettings", "Version",
    "add_section_flags", "add_settings_flags", "collect_section_flags", "decode",
    "decode_label_fields", "decode_prediction_fields", "decode_request", "decode_request_fields", "encode",
    "encode_dict", "explain", "parse_json", "utc_now",
]  # fmt: skip


def packages() -> list[str]:
    names = []
    for folder in ("schemas", "producers", "workers"):
        package = importlib.import_module(f"riverrun.{folder}")
        names.append(package.__name__)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
                  if m.ispkg]  # fmt: skip
    return names


def test_the_client_and_the_contracts_export_exactly_their_public_face() -> None:
    assert importlib.import_module("riverrun.producers").__all__ == PRODUCERS
    assert importlib.import_module("riverrun.schemas").__all__ == SCHEMAS


@pytest.mark.parametrize("name", packages())
def test_every_package_names_its_public_face_sorted_and_every_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__"
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    for member in exported:
        assert getattr(package, member) is not None, f"{name}.{member}"
