"""`riverrun topics create`: create riverrun's topics on any Kafka, idempotently."""

from __future__ import annotations

import argparse
import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import Field, ValidationError

from riverrun.schemas import (
    KafkaSettings,
    RiverrunSettings,
    TopicSettings,
    add_settings_flags,
    collect_section_flags,
)
from riverrun.schemas.settings import explain

logger = logging.getLogger(__name__)

# The models topic is a registry: the latest record per key is what matters. Artifact chunks
# have a key each, so compaction keeps every chunk of every snapshot until it is superseded.
_COMPACTED = {"cleanup.policy": "compact"}
_REGISTRY_ROLES = {"models", "artifacts", "resent", "key_states"}
# Logs whose order is the contract: one partition each (the learner's examples).
# The artifacts topic too: a snapshot's chunks are found by one partition and a first offset.
_SINGLE_PARTITION = frozenset({"models", "examples", "artifacts", "resent"})


class TopicAdminSettings(RiverrunSettings):
    """Settings of `riverrun topics`."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)


def create_topics(
    kafka: KafkaSettings,
    topics: TopicSettings,
    partitions: int = 4,
    replication_factor: int = -1,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create every riverrun topic; existing ones are fine. Returns name to "created"/"exists"."""
    admin = AdminClient(kafka.client_config())
    wanted = []
    for role, name in topics.all().items():
        config = dict(_COMPACTED) if role in _REGISTRY_ROLES else {}
        count = 1 if role in _SINGLE_PARTITION else partitions
        wanted.append(NewTopic(name, num_partitions=count, replication_factor=replication_factor,
                               config=config))
    results: dict[str, str] = {}
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            results[name] = "created"
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                results[name] = "exists"
            else:
                raise
    return results


def register(parser: argparse.ArgumentParser) -> None:
    """Add `riverrun topics create`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="Create the topics (existing ones are fine).")
    create.add_argument("--partitions", type=int, default=4, help="Partitions per topic [4].")
    create.add_argument(
        "--replication-factor", type=int, default=-1, help="Replicas per partition [broker default]."
    )
    add_settings_flags(create, TopicAdminSettings)
    create.set_defaults(handler=_run_create)


def _run_create(args: argparse.Namespace) -> int:
    try:
        settings = TopicAdminSettings(**collect_section_flags(args))
    except ValidationError as exc:
        logger.error("bad configuration: %s", explain(exc))
        return 2
    try:
        results = create_topics(settings.kafka, settings.topics, args.partitions, args.replication_factor)
    except KafkaException as exc:
        logger.error("could not create topics on %s: %s", settings.kafka.bootstrap_servers, exc)
        return 1
    for name, state in sorted(results.items()):
        print(f"{name}: {state}")
    return 0
