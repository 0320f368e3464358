"""The production profile refuses insecure connection settings; JSON logs mask secrets."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import SecretStr

from riverrun.schemas import KafkaSettings
from riverrun.workers.cli import parse_args
from riverrun.workers.profile import (
    Profile,
    ProfileSettings,
    production_violations,
    profile_violations,
)
from riverrun.workers.registry import RegistrySettings
from riverrun.workers.runtime.logfmt import MASK, JsonFormatter, redact

KEYED = RegistrySettings(signing_key=SecretStr("k" * 32))


@pytest.mark.parametrize(("kafka", "named"), [
    (KafkaSettings(), "SECURITY_PROTOCOL is PLAINTEXT"),
    (KafkaSettings(security_protocol="SASL_PLAINTEXT"), "SECURITY_PROTOCOL is SASL_PLAINTEXT"),
    (KafkaSettings(security_protocol="SSL",
                   extra={"enable.ssl.certificate.verification": "False"}), "verification"),
    (KafkaSettings(security_protocol="SASL_SSL",
                   extra={"ssl.endpoint.identification.algorithm": "none"}), "identification"),
])  # fmt: skip
def test_production_refuses_what_is_not_verified_tls(kafka: KafkaSettings, named: str) -> None:
    problems = production_violations(kafka, KEYED)
    assert len(problems) == 1 and named in problems[0]


def test_production_accepts_verified_tls_and_refuses_the_development_key() -> None:
    tls = KafkaSettings(security_protocol="SASL_SSL", ssl_ca_location="/ca.pem",
                        extra={"ssl.endpoint.identification.algorithm": "https"})
    assert production_violations(tls, KEYED) == []
    problems = production_violations(tls, RegistrySettings(insecure_dev=True))
    assert len(problems) == 1 and "INSECURE_DEV" in problems[0]


def test_the_profile_reads_the_command_line_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = parse_args(["score", "--bootstrap-servers", "b:9092"])
    assert profile_violations(Profile.DEVELOPMENT, plain) == []
    assert profile_violations(Profile.PRODUCTION, plain)
    monkeypatch.setenv("RIVERRUN_KAFKA__SECURITY_PROTOCOL", "SSL")
    assert profile_violations(Profile.PRODUCTION, plain) == []
    flagged = parse_args(["score", "--security-protocol", "PLAINTEXT"])
    assert profile_violations(Profile.PRODUCTION, flagged)  # a flag wins over the environment
    assert profile_violations(Profile.PRODUCTION, parse_args(["schemas", "export"])) == []
    monkeypatch.setenv("RIVERRUN_PROFILE", "production")
    assert ProfileSettings().profile is Profile.PRODUCTION


def test_json_logs_mask_secret_looking_keys_at_any_depth() -> None:
    settings = {"kafka": {"sasl_password": MASK, "extra": {"sasl.password": "hunter2",
                                                           "linger.ms": "5"}},
                "registry": {"signing_key": "abc", "insecure_dev": False}}
    assert redact(settings) == {"kafka": {"sasl_password": MASK, "extra": {
        "sasl.password": MASK, "linger.ms": "5"}}, "registry": {"signing_key": MASK,
                                                                "insecure_dev": False}}
    record = logging.LogRecord("x", logging.INFO, "f", 1, "effective settings", None, None)
    record.settings = settings
    record.token = "t0ken"
    line = JsonFormatter().format(record)
    assert "hunter2" not in line and "abc" not in line and "t0ken" not in line
    assert json.loads(line)["settings"]["kafka"]["extra"]["linger.ms"] == "5"
