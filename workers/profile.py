"""Deployment profiles: what a process refuses to start with in production.

`riverrun --profile production` (or `RIVERRUN_PROFILE=production`) checks the connection and
registry settings of the command before it runs: plaintext to Kafka, TLS whose certificate or
host name is not verified, and the publicly known development signing key are refused, each
with the setting to change. The development profile (the default) checks nothing.
"""

from __future__ import annotations

import argparse
from enum import StrEnum
from typing import Any

from pydantic import Field

from riverrun.schemas import KafkaSettings, RiverrunSettings, collect_section_flags
from riverrun.workers.registry import RegistrySettings


class Profile(StrEnum):
    """How strict a process is about its settings."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ProfileSettings(RiverrunSettings):
    """The profile (`RIVERRUN_PROFILE`, or `--profile`)."""

    profile: Profile = Field(
        default=Profile.DEVELOPMENT,
        description="production refuses plaintext, unverified TLS and the development key.",
    )


class _Connection(RiverrunSettings):
    """The sections a profile judges, read as the command will read them."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)


# librdkafka options that turn TLS verification off, and the values that do it.
_UNVERIFIED = {
    "enable.ssl.certificate.verification": {"false", "0"},
    "ssl.endpoint.identification.algorithm": {"none", ""},
}


def production_violations(kafka: KafkaSettings, registry: RegistrySettings) -> list[str]:
    """Why these settings must not run in production; empty when they may."""
    problems = []
    if kafka.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        problems.append(
            f"RIVERRUN_KAFKA__SECURITY_PROTOCOL is {kafka.security_protocol}, which sends "
            "records and credentials in the clear: set it to SSL or SASL_SSL"
        )
    for option, off in _UNVERIFIED.items():
        value = kafka.extra.get(option)
        if value is not None and value.strip().lower() in off:
            problems.append(
                f"the Kafka option {option}={value} turns off TLS verification: remove it, and "
                "point RIVERRUN_KAFKA__SSL_CA_LOCATION at the CA that signed the brokers"
            )
    if registry.insecure_dev and registry.signing_key is None:
        problems.append(
            "RIVERRUN_REGISTRY__INSECURE_DEV signs models with a publicly known key: set "
            "RIVERRUN_REGISTRY__SIGNING_KEY to a secret instead"
        )
    return problems


def profile_violations(profile: Profile, args: argparse.Namespace) -> list[str]:
    """What the command's settings break under `profile`; only commands that reach Kafka."""
    if profile is not Profile.PRODUCTION:
        return []
    flags = collect_section_flags(args)
    if not any(dest.startswith("kafka__") for dest in vars(args)):
        return []  # a command that never connects (schemas export, train)
    wanted: dict[str, Any] = {s: flags[s] for s in ("kafka", "registry") if s in flags}
    connection = _Connection(**wanted)
    return production_violations(connection.kafka, connection.registry)
