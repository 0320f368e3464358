"""docker-compose.yml and the image, checked offline (no Docker engine here): the file against
the Compose Specification's JSON Schema, each riverrun command against the real command line,
and what the services share (ports, mounted files, the model spec inside the image)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from riverrun.workers.cli import parse_args
from riverrun.workers.scorer.settings import ScorerOptions

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
# As vendored by PyPI check-jsonschema 0.39.0; see deploy_schemas/README.md.
SCHEMA = Path(__file__).parent / "deploy_schemas" / "compose-spec.json"
# The image's entry point runs `riverrun --log-format json`, then the service's command.
ENTRYPOINT = ["--log-format", "json"]
RIVERRUN_SERVICES = ("topics", "release", "scorer", "learner", "judge", "replay")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = compose()["services"]
    return loaded


def validator() -> Any:
    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def test_compose_file_matches_the_compose_specification() -> None:
    validator().validate(compose())


def test_the_schema_refuses_a_broken_compose_file() -> None:
    broken = compose()
    broken["services"]["scorer"]["depends_on"]["release"]["condition"] = "service_done"
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(broken)
    broken = compose()
    broken["services"]["scorer"]["stop_grace_periods"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(broken)


def test_the_stack_has_every_part() -> None:
    assert set(services()) == {"kafka", *RIVERRUN_SERVICES, "prometheus", "grafana"}
    assert services()["kafka"]["image"].startswith("apache/kafka:")
    kraft = services()["kafka"]["environment"]
    assert kraft["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services()["scorer"]["deploy"]["replicas"] == 2
    for name in RIVERRUN_SERVICES:
        assert services()[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services()[name]["environment"]["RIVERRUN_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"



@pytest.mark.parametrize("name", RIVERRUN_SERVICES)
def test_every_service_runs_a_command_riverrun_knows(name: str) -> None:
    command = services()[name]["command"]
    parsed = parse_args([*ENTRYPOINT, *command])
    assert parsed.command == command[0]


def test_the_scorers_follow_the_registry_and_serve_metrics() -> None:
    command = services()["scorer"]["command"]
    assert "--model-file" not in command
    assert command[command.index("--metrics-port") + 1] == "9100"


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"{duration}: write grace periods in seconds"
    return float(match.group(1))


def test_scorers_get_time_to_finish_flush_and_commit() -> None:
    grace = _seconds(services()["scorer"]["stop_grace_period"])
    assert grace > ScorerOptions.model_fields["shutdown_timeout_s"].default


def test_the_released_spec_is_in_the_image() -> None:
    command = services()["release"]["command"]
    spec = command[command.index("--spec") + 1]
    assert spec.startswith("/app/")
    assert (ROOT / spec.removeprefix("/app/")).is_file()
    assert "COPY --chown=root:root deploy/specs /app/deploy/specs" in DOCKERFILE.read_text()


def test_the_image_is_multi_stage_and_runs_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(stages) >= 2 and all(s.endswith("-slim") for s in stages)
    (user,) = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    (exposed,) = re.findall(r"^EXPOSE (.+)$", text, flags=re.MULTILINE)
    assert {"9100", "9101", "9103"} <= set(exposed.split())


def test_mounted_files_exist() -> None:
    for name in ("prometheus", "grafana"):
        for volume in services()[name]["volumes"]:
            host = volume.split(":")[0]
            assert (ROOT / host).exists(), f"{name} mounts {host}, which does not exist"


def test_prometheus_scrapes_every_process_on_its_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                scraped[name] = sd["port"]
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                scraped[host] = int(port)
    for name in ("scorer", "learner", "judge"):
        command = services()[name]["command"]
        assert scraped[name] == int(command[command.index("--metrics-port") + 1]), name


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    grafana = ROOT / "deploy" / "grafana"
    datasources = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    providers = yaml.safe_load((grafana / "provisioning/dashboards/riverrun.yml").read_text())
    (provider,) = providers["providers"]
    mounts = dict(v.split(":")[:2] for v in services()["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((grafana / "dashboards" / "riverrun.json").read_text())
    uids = {target["datasource"]["uid"] for panel in dashboard["panels"]
            for target in panel.get("targets", [])}
    assert uids == {source["uid"]}
