"""The judge's settings, its broker list and its state server (no broker)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from riverrun.schemas import KafkaSettings, collect_section_flags
from riverrun.workers.cli import parse_args
from riverrun.workers.judge.settings import JudgeSettings
from riverrun.workers.judge.state_server import StateServer


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERRUN_JUDGE__HTTP_PORT", "9200")
    monkeypatch.setenv("RIVERRUN_JUDGE__DECIDE_INTERVAL_S", "5")
    assert JudgeSettings().judge.http_port == 9200
    args = parse_args(["judge", "--http-port", "9300", "--app-id", "j1",
                                      "--metrics-port", "9103"])
    settings = JudgeSettings(**collect_section_flags(args))
    assert (settings.judge.http_port, settings.judge.app_id, settings.judge.metrics_port) == (
        9300, "j1", 9103)
    assert settings.judge.decide_interval_s == 5.0


def test_a_bad_value_names_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERRUN_JUDGE__DECIDE_INTERVAL_S", "0")
    with pytest.raises(ValueError, match="decide_interval_s"):
        JudgeSettings()


def test_broker_urls_for_faust() -> None:
    from riverrun.workers.judge.app import broker_credentials, broker_urls

    kafka = KafkaSettings(bootstrap_servers="a:1,b:2")
    assert broker_urls(kafka) == ["kafka://a:1", "kafka://b:2"]
    assert broker_credentials(kafka) is None
    sasl = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                         sasl_username="u", sasl_password="p")  # type: ignore[arg-type]
    credentials = broker_credentials(sasl)
    assert credentials.username == "u" and credentials.password == "p"


def test_the_state_server_serves_all_models_or_one() -> None:
    server = StateServer(port=0, host="127.0.0.1").start()
    try:
        server.publish({"ready": True, "models": {"fraud": {"policy": {"sequence": 3}}}})
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/state") as response:  # noqa: S310  # loopback
            assert json.loads(response.read())["models"]["fraud"]["policy"]["sequence"] == 3
        with urllib.request.urlopen(f"{base}/state/fraud") as response:  # noqa: S310  # loopback
            assert json.loads(response.read()) == {"policy": {"sequence": 3}}
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/state/churn")  # noqa: S310  # loopback
        assert missing.value.code == 404
        missing.value.close()
    finally:
        server.stop()
