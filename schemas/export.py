"""Generate the published contracts: a JSON Schema per event and an AsyncAPI document of topics.

The files are committed beside this module; a test regenerates them and fails on any difference,
so the published contract never drifts from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from riverrun.schemas.events import (
    EVENTS,
    SCHEMA_VERSION,
    DeadLetter,
    DriftDetected,
    ExampleJoined,
    LabelObserved,
    ModelRetired,
    ModelVersionReleased,
    OutcomeRecorded,
    PolicyChanged,
    PredictionMade,
    PredictionRequested,
    SnapshotPublished,
)
from riverrun.schemas.settings import TopicSettings

HERE = Path(__file__).parent
JSON_SCHEMA_DIR = HERE / "jsonschema"
ASYNCAPI_FILE = HERE / "asyncapi.json"

_DUMP = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def json_schemas() -> dict[str, dict[str, Any]]:
    """Each event's JSON Schema (validation mode: what a producer must send)."""
    out = {}
    for name, model in sorted(EVENTS.items()):
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"urn:riverrun:schema:v{SCHEMA_VERSION}:{name}"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[name] = schema
    return out


_CHANNELS: list[tuple[str, str, list[type[Any]], str]] = [
    ("requests", "requests", [PredictionRequested],
     "Prediction requests from upstream services, keyed by entity key (else request id)."),
    ("predictions", "predictions", [PredictionMade],
     "One prediction per request, same key and partition as the request."),
    ("shadow_predictions", "predictions.shadow", [PredictionMade],
     "Predictions of shadow versions; never read by downstream services."),
    ("feedback", "feedback", [LabelObserved],
     "Labels observed after the fact, same key as their request."),
    ("dead_letters", "requests.dlq", [DeadLetter],
     "Records no worker could read: the original bytes, with riverrun.* headers naming why."),
    ("models", "models", [ModelVersionReleased, SnapshotPublished, PolicyChanged, DriftDetected,
                          ModelRetired],
     "Compacted registry: version releases, snapshots, policies, drift detections and "
     "retirements."),
    ("outcomes", "outcomes", [OutcomeRecorded],
     "Predictions joined with their labels, for the judge."),
    ("artifacts", "models.artifacts", [],
     "Compacted model artifact bytes, in chunks of at most 512 KiB; headers "
     "riverrun.artifact.id, riverrun.artifact.chunk and riverrun.artifact.chunks name each "
     "chunk. Snapshot records on `models` point at them as kafka://topic/partition/offset."),
    ("examples", "examples", [ExampleJoined],
     "Labels joined with their features: the learner's ordered log, one partition."),
    ("resent", "requests.dlq.resent", [],
     "Compacted: one record per dead letter that `riverrun dlq resend` sent back, keyed "
     "`partition/offset` of the letter, so that none is sent back twice."),
    ("key_states", "models.keys", [],
     "Compacted: per-key models' learned state, keyed `model@version/key`, in the partition of "
     "the same number as the key's requests; the value is the key's pipeline pickled, headers "
     "riverrun.key.counts (JSON: examples, next_offset, updated_ms, losses) and "
     "riverrun.key.signature (HMAC). A tombstone forgets an expired key."),
]  # fmt: skip


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document describing every topic and who sends or receives on it."""
    defaults = TopicSettings()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for role, address, events, description in _CHANNELS:
        assert getattr(defaults, role) == address  # noqa: S101  # the defaults are the contract
        channel_messages = {}
        for event in events:
            name = event.__name__
            payload: dict[str, Any] = {"$ref": f"jsonschema/{name}.json"}
            message: dict[str, Any] = {
                "name": name,
                "title": name,
                "summary": (event.__doc__ or "").strip().splitlines()[0],
                "contentType": "application/json",
                "payload": payload,
            }
            if event is DeadLetter:
                message["contentType"] = "application/octet-stream"
                message["payload"] = {"type": "string", "format": "binary",
                                      "description": "The original record's bytes, untouched."}
                message["headers"] = {"$ref": "jsonschema/DeadLetter.json"}
            messages[name] = message
            channel_messages[name] = {"$ref": f"#/components/messages/{name}"}
        channels[role] = {
            "address": address,
            "description": description + f" Topic name set by RIVERRUN_TOPICS__{role.upper()}.",
            "messages": channel_messages,
        }
        operations[f"{role}.publish"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{role}"},
            "summary": f"Write to {address}.",
        }
        operations[f"{role}.consume"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{role}"},
            "summary": f"Read from {address}.",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "riverrun",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Event-driven Model-on-Demand stream processing: requests in, "
            "predictions out, labels fed back to online River models.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "Any Kafka-protocol broker (RIVERRUN_KAFKA__BOOTSTRAP_SERVERS).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def rendered() -> dict[str, bytes]:
    """Every generated file, by path relative to the schemas package."""
    files = {f"jsonschema/{name}.json": orjson.dumps(schema, option=_DUMP)
             for name, schema in json_schemas().items()}
    files["asyncapi.json"] = orjson.dumps(asyncapi(), option=_DUMP)
    return files


def write_all(directory: Path = HERE) -> list[Path]:
    """Write the generated files under `directory`; return their paths."""
    written = []
    for relative, content in rendered().items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written
