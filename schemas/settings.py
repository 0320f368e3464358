"""Settings every riverrun process shares: the base class, how to reach Kafka, the topic names.

Each process role composes these nested sections into its own `RiverrunSettings` subclass,
read once from flags and `RIVERRUN_<SECTION>__<FIELD>` environment variables.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RiverrunSettings(BaseSettings):
    """The base of every process's settings: flags win over `RIVERRUN_<SECTION>__<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="RIVERRUN_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster (any Kafka-protocol broker)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list of brokers to bootstrap from.",
    )
    client_id: str = Field(default="riverrun", description="Client id reported to the broker.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="librdkafka security.protocol."
    )
    sasl_mechanism: str | None = Field(
        default=None, description="SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ..."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    ssl_ca_location: str | None = Field(default=None, description="CA bundle (PEM) path.")
    ssl_certificate_location: str | None = Field(
        default=None, description="Client certificate (PEM) path, for mutual TLS."
    )
    ssl_key_location: str | None = Field(default=None, description="Client key (PEM) path.")
    ssl_key_password: SecretStr | None = Field(default=None, description="Client key password.")
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka options (`--kafka-option key=value`), applied after "
        "riverrun's defaults and before connection and security settings.",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap_not_empty(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts:
            raise ValueError(
                "RIVERRUN_KAFKA__BOOTSTRAP_SERVERS is empty: set it (or --bootstrap-servers) "
                "to host:port of a Kafka broker"
            )
        for host in hosts:
            _, sep, port = host.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(
                    f"RIVERRUN_KAFKA__BOOTSTRAP_SERVERS has {host!r}, which is not host:port"
                )
        return ",".join(hosts)

    def client_config(self, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """Render librdkafka options in a fixed order: defaults, extras, connection, security."""
        config: dict[str, Any] = dict(defaults or {})
        config.update(self.extra)
        config["bootstrap.servers"] = self.bootstrap_servers
        config.setdefault("client.id", self.client_id)
        config["security.protocol"] = self.security_protocol.lower()
        optional: dict[str, str | None] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": (
                self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            ),
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config

    def redacted(self) -> dict[str, Any]:
        """The effective settings for a start-up log line, with secrets masked."""
        return self.model_dump(mode="json")


class TopicSettings(BaseModel):
    """Names of the topics riverrun reads and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: str = Field(default="requests", description="Prediction requests from upstream.")
    predictions: str = Field(default="predictions", description="Predictions for downstream.")
    shadow_predictions: str = Field(
        default="predictions.shadow", description="Shadow predictions, never seen downstream."
    )
    feedback: str = Field(default="feedback", description="Labels observed after the fact.")
    dead_letters: str = Field(
        default="requests.dlq", description="Records no worker could read, with the reason."
    )
    resent: str = Field(
        default="requests.dlq.resent",
        description="Which dead letters `riverrun dlq resend` sent back (compacted): each once.",
    )
    models: str = Field(
        default="models", description="Releases, snapshots and policies (compacted)."
    )
    outcomes: str = Field(default="outcomes", description="Predictions joined with labels.")
    artifacts: str = Field(
        default="models.artifacts",
        description="Model artifact bytes, in chunks, that snapshot records point at (compacted).",
    )
    examples: str = Field(
        default="examples",
        description="Labels joined with their features, in learning order (one partition).",
    )
    key_states: str = Field(
        default="models.keys",
        description="Per-key models' learned state, one record per key (compacted; as many "
        "partitions as requests and feedback, a key in the partition of the same number).",
    )

    def all(self) -> dict[str, str]:
        """Every topic, by its role."""
        return self.model_dump()


_FLAG_DEST_SEPARATOR = "__"


def add_section_flags(
    parser: argparse.ArgumentParser,
    section: str,
    model: type[BaseModel],
    only: Iterable[str] | None = None,
) -> None:
    """Add one `--field-name` flag per field of a settings section, help from its description.

    Flags default to "not given", so environment variables (`RIVERRUN_<SECTION>__<FIELD>`)
    keep their say unless the user passes the flag. `dict` fields take repeated `key=value`.
    """
    wanted = set(only) if only is not None else None
    group = parser.add_argument_group(section)
    for name, field in model.model_fields.items():
        if wanted is not None and name not in wanted:
            continue
        flag = "--" + name.replace("_", "-")
        if section == "topics":
            flag = f"--topic-{name.replace('_', '-')}"
        dest = f"{section}{_FLAG_DEST_SEPARATOR}{name}"
        help_text = (field.description or "") + f" [env RIVERRUN_{section.upper()}__{name.upper()}]"
        annotation = field.annotation
        if annotation is bool:
            group.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                help=help_text,
            )
        elif getattr(annotation, "__origin__", None) is dict:
            group.add_argument(
                "--kafka-option" if section == "kafka" else flag,
                dest=dest, action="append", default=None, metavar="KEY=VALUE", help=help_text,
            )
        else:
            group.add_argument(flag, dest=dest, default=None, metavar=name.upper(), help=help_text)


def add_settings_flags(parser: argparse.ArgumentParser, settings: type[BaseModel]) -> None:
    """Add the flags of every nested section of a process's settings (`kafka`, `topics`, ...)."""
    for name, field in settings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            add_section_flags(parser, name, section)


def collect_section_flags(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Turn the flags a user gave into nested overrides for a pydantic-settings class."""
    overrides: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if value is None or _FLAG_DEST_SEPARATOR not in dest:
            continue
        section, name = dest.split(_FLAG_DEST_SEPARATOR, 1)
        if isinstance(value, list):
            pairs = {}
            for item in value:
                key, sep, val = str(item).partition("=")
                if not sep or not key:
                    raise SystemExit(f"--kafka-option {item!r} is not KEY=VALUE")
                pairs[key] = val
            value = pairs
        overrides.setdefault(section, {})[name] = value
    return overrides


def explain(exc: ValidationError) -> str:
    """Name each setting that failed, with its flag and the reason, joined by "; ".

    For example `RIVERRUN_SCORER__BATCH_SIZE (--batch-size): Input should be greater than 0`.
    """
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        env = "RIVERRUN_" + "__".join(part.upper() for part in loc)
        flag = "--" + loc[-1].replace("_", "-") if loc else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{env} ({flag}): {message}")
    return "; ".join(lines)
