"""The Kubernetes manifests under deploy/k8s, checked offline: every object against its kind's
schema (Kubernetes' own, bundled by kubernetes-validate; KEDA's, from its CRDs), the
kustomizations' references, and the values that must agree with the code: ports and probes,
shutdown time, consumer group, topic, settings names."""

from __future__ import annotations

import copy
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from riverrun.producers.replay import ReplaySettings
from riverrun.schemas import TopicSettings
from riverrun.workers.cli import parse_args
from riverrun.workers.learner.settings import LearnerOptions, LearnerSettings
from riverrun.workers.scorer.settings import ScorerOptions, ScorerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
SCHEMAS = Path(__file__).parent / "deploy_schemas"
KUBERNETES_VERSION = "1.32.0"
KEDA_CRDS = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
}
# Beyond the flush allowed by the shutdown timeout: the batch in hand, the commit, leaving.
SHUTDOWN_MARGIN_S = 10

Object = dict[str, Any]


def documents(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def is_object(doc: Object) -> bool:
    """A whole Kubernetes object: not a kustomization, not a partial patch."""
    return ({"apiVersion", "kind", "metadata"} <= doc.keys()
            and doc["kind"] not in ("Kustomization", "Component") and "$patch" not in doc)


def objects_under(directory: Path) -> list[tuple[Path, Object]]:
    return [(path, doc) for path in sorted(directory.rglob("*.yaml"))
            for doc in documents(path) if is_object(doc)]


def base_objects() -> dict[tuple[str, str], Object]:
    """The objects the base kustomization deploys, keyed as kustomize targets them."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return {(doc["kind"], doc["metadata"]["name"]): doc
            for resource in kustomization["resources"] for doc in documents(BASE / resource)}


def base(kind: str, name: str) -> Object:
    return base_objects()[(kind, name)]


# -- schemas ---------------------------------------------------------------------------------


def _strict(node: Object) -> Object:
    # The API server prunes unknown fields and `kubectl apply --validate=strict` refuses them:
    # an object with declared properties takes no others, unless the CRD preserves them.
    if node.get("nullable") and "type" in node:
        node["type"] = [node["type"], "null"]
    properties = node.get("properties")
    if isinstance(properties, dict):
        for child in properties.values():
            _strict(child)
        if "additionalProperties" not in node and not node.get(
                "x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _strict(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for child in node.get(key, []):
            _strict(child)
    return node


@cache
def crd_validator(kind: str, version: str = "v1alpha1") -> Any:
    """A strict JSON Schema validator of a KEDA kind, from its CustomResourceDefinition."""
    crd = yaml.safe_load((SCHEMAS / KEDA_CRDS[kind]).read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = _strict(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate(doc: Object) -> None:
    """Raise unless the object matches the schema of its kind and apiVersion."""
    if doc["apiVersion"].startswith("keda.sh/"):
        crd_validator(doc["kind"]).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


MANIFESTS = objects_under(K8S)


@pytest.mark.parametrize(
    "doc", [doc for _, doc in MANIFESTS],
    ids=[f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}"
         for path, doc in MANIFESTS])  # fmt: skip
def test_every_manifest_matches_the_schema_of_its_kind(doc: Object) -> None:
    validate(doc)


def test_the_schemas_refuse_what_a_cluster_would_refuse() -> None:
    typo = copy.deepcopy(base("Deployment", "riverrun-scorer"))
    typo["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    with pytest.raises(jsonschema.ValidationError):
        validate(typo)
    unquoted = copy.deepcopy(base("ScaledObject", "riverrun-scorer"))
    unquoted["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 5000  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        validate(unquoted)
    unknown = copy.deepcopy(base("ScaledObject", "riverrun-scorer"))
    unknown["spec"]["maxReplicas"] = 12
    with pytest.raises(jsonschema.ValidationError):
        validate(unknown)
    no_secret = copy.deepcopy(base("TriggerAuthentication", "riverrun-kafka"))
    del no_secret["spec"]["secretTargetRef"][0]["key"]
    with pytest.raises(jsonschema.ValidationError):
        validate(no_secret)


def test_the_base_deploys_every_part() -> None:
    assert set(base_objects()) == {
        ("ConfigMap", "riverrun-config"), ("Secret", "riverrun-secrets"),
        ("Deployment", "riverrun-scorer"), ("Service", "riverrun-scorer"),
        ("PodDisruptionBudget", "riverrun-scorer"), ("ScaledObject", "riverrun-scorer"),
        ("TriggerAuthentication", "riverrun-kafka"),
        ("Deployment", "riverrun-learner"), ("Service", "riverrun-learner"),
        ("Deployment", "riverrun-judge"), ("Service", "riverrun-judge"),
    }  # fmt: skip
    for _, doc in base_objects().items():
        assert "namespace" not in doc["metadata"], "the base is namespace-less; overlays set it"


# -- kustomizations --------------------------------------------------------------------------


def kustomization_files() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


@pytest.mark.parametrize("path", kustomization_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomizations_reference_only_files_that_exist(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    here = path.parent
    referenced = [*kustomization.get("resources", []), *kustomization.get("components", [])]
    referenced += [p["path"] for p in kustomization.get("patches", []) if "path" in p]
    for generator in (*kustomization.get("secretGenerator", []),
                      *kustomization.get("configMapGenerator", [])):
        referenced += generator.get("envs", [])
        referenced += [f.split("=", 1)[-1] for f in generator.get("files", [])]
    assert referenced
    for name in referenced:
        target = (here / name).resolve()
        assert target.exists(), f"{path.relative_to(K8S)} names {name}, which does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), f"{name} is not a kustomization"
        else:
            # kustomize loads no file outside the kustomization's own directory tree.
            assert target.is_relative_to(here.resolve()), f"{name} is outside {here}"


def test_the_base_lists_every_manifest_but_the_hpa_fallback() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert present - listed == {"hpa-fallback.yaml"}


def _pointer_exists(doc: Any, pointer: str) -> bool:
    for token in pointer.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        elif isinstance(doc, dict) and token in doc:
            doc = doc[token]
        else:
            return False
    return True


def test_overlay_patches_target_resources_of_the_base() -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    objects = base_objects()
    for patch in kustomization["patches"]:
        if "path" in patch:
            for doc in documents(OVERLAY / patch["path"]):
                assert (doc["kind"], doc["metadata"]["name"]) in objects, doc["metadata"]
        else:
            target = patch["target"]
            key = (target["kind"], target["name"])
            assert key in objects, f"patch target {key} is not in the base"
            for op in yaml.safe_load(patch["patch"]):
                if op["op"] in ("replace", "remove", "test"):
                    assert _pointer_exists(objects[key], op["path"]), f"{key} has no {op['path']}"
    for replica in kustomization.get("replicas", []):
        assert ("Deployment", replica["name"]) in objects
    containers = {c["image"] for (kind, _), doc in objects.items() if kind == "Deployment"
                  for c in doc["spec"]["template"]["spec"]["containers"]}
    assert {image["name"] for image in kustomization["images"]} == containers
    for generator in kustomization.get("secretGenerator", []):
        assert generator["behavior"] in ("replace", "merge")
        assert ("Secret", generator["name"]) in objects
        # A hash suffix would not reach the name inside KEDA's TriggerAuthentication.
        assert generator["options"]["disableNameSuffixHash"] is True


def test_overlay_gives_keda_and_the_workers_the_same_brokers() -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    (config,) = documents(OVERLAY / "configmap-kafka.yaml")
    (keda_patch,) = [p for p in kustomization["patches"] if p.get("target", {}).get("kind")
                     == "ScaledObject"]
    ops = {op["path"]: op["value"] for op in yaml.safe_load(keda_patch["patch"])}
    assert (ops["/spec/triggers/0/metadata/bootstrapServers"]
            == config["data"]["RIVERRUN_KAFKA__BOOTSTRAP_SERVERS"])
    (scorers,) = [r["count"] for r in kustomization["replicas"] if r["name"] == "riverrun-scorer"]
    assert ops["/spec/minReplicaCount"] == scorers


# -- agreement with the code -----------------------------------------------------------------


def config() -> dict[str, str]:
    data: dict[str, str] = base("ConfigMap", "riverrun-config")["data"]
    return data


def container(name: str) -> Object:
    (only,) = base("Deployment", name)["spec"]["template"]["spec"]["containers"]
    spec: Object = only
    return spec


def test_graceful_shutdown_fits_in_the_grace_period() -> None:
    for name, variable, default in (
        ("riverrun-scorer", "RIVERRUN_SCORER__SHUTDOWN_TIMEOUT_S",
         ScorerOptions.model_fields["shutdown_timeout_s"].default),
        ("riverrun-learner", "RIVERRUN_LEARNER__SHUTDOWN_TIMEOUT_S",
         LearnerOptions.model_fields["shutdown_timeout_s"].default),
    ):  # fmt: skip
        shutdown = float(config().get(variable, default))
        pod = base("Deployment", name)["spec"]["template"]["spec"]
        grace = pod["terminationGracePeriodSeconds"]
        assert grace >= shutdown + SHUTDOWN_MARGIN_S, f"{name}: {grace}s to stop, {shutdown}s flush"


def _metrics_port(args: list[str]) -> int:
    return int(args[args.index("--metrics-port") + 1])


@pytest.mark.parametrize("name", ["riverrun-scorer", "riverrun-learner", "riverrun-judge"])
def test_probes_and_scrapes_reach_the_health_server(name: str) -> None:
    deployment = base("Deployment", name)
    spec = container(name)
    port = _metrics_port(spec["args"])
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in spec["ports"]
    assert spec["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    service = base("Service", name)
    assert {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"} in (
        service["spec"]["ports"])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    resources = spec["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_learner_is_a_singleton() -> None:
    learner = base("Deployment", "riverrun-learner")["spec"]
    assert learner["replicas"] == 1
    assert learner["strategy"] == {"type": "Recreate"}  # never two learners at once
    scaled = [doc for (kind, _), doc in base_objects().items() if kind == "ScaledObject"]
    assert all(doc["spec"]["scaleTargetRef"]["name"] != "riverrun-learner" for doc in scaled)


def test_the_disruption_budget_covers_the_scorers() -> None:
    budget = base("PodDisruptionBudget", "riverrun-scorer")["spec"]
    labels = base("Deployment", "riverrun-scorer")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_keda_scales_the_scorers_on_their_own_group_lag() -> None:
    scaled = base("ScaledObject", "riverrun-scorer")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "riverrun-scorer"}
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == config()["RIVERRUN_SCORER__GROUP_ID"]
    assert meta["topic"] == TopicSettings().requests
    assert meta["bootstrapServers"] == config()["RIVERRUN_KAFKA__BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0
    # KEDA connects the way the workers do.
    keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
                 "SCRAM-SHA-512": "scram_sha512"}
    assert meta["sasl"] == keda_sasl[config()["RIVERRUN_KAFKA__SASL_MECHANISM"]]
    assert meta["tls"] == ("enable" if config()["RIVERRUN_KAFKA__SECURITY_PROTOCOL"].endswith(
        "SSL") else "disable")
    auth = base("TriggerAuthentication", trigger["authenticationRef"]["name"])
    secret = base("Secret", "riverrun-secrets")["stringData"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == "riverrun-secrets" and ref["key"] in secret
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"username", "password"}


def test_the_hpa_fallback_matches_the_scaled_object() -> None:
    (hpa,) = documents(BASE / "hpa-fallback.yaml")
    scaled = base("ScaledObject", "riverrun-scorer")["spec"]
    assert hpa["spec"]["scaleTargetRef"] == scaled["scaleTargetRef"]
    # At most one scorer per partition either way.
    assert hpa["spec"]["maxReplicas"] == scaled["maxReplicaCount"]
    assert hpa["spec"]["minReplicas"] == scaled["minReplicaCount"]


def _fields(settings_class: type[Any]) -> set[tuple[str, str]]:
    return {(section.upper(), field.upper())
            for section, info in settings_class.model_fields.items()
            for field in getattr(info.annotation, "model_fields", {})}


def test_config_map_and_secret_hold_settings_the_processes_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = base("Secret", "riverrun-secrets")["stringData"]
    known = _fields(ScorerSettings) | _fields(LearnerSettings) | _fields(ReplaySettings)
    for variable in [*config(), *secret]:
        prefix, _, rest = variable.partition("_")
        section, _, field = rest.partition("__")
        assert prefix == "RIVERRUN" and (section, field) in known, f"{variable} is read by no one"
    for variable, value in {**config(), **secret}.items():
        monkeypatch.setenv(variable, value)
    # Each process takes the whole environment, ignoring the sections it lacks.
    scorer = ScorerSettings()
    assert scorer.kafka.security_protocol == config()["RIVERRUN_KAFKA__SECURITY_PROTOCOL"]
    assert scorer.scorer.group_id == config()["RIVERRUN_SCORER__GROUP_ID"]
    assert LearnerSettings().learner.model == config()["RIVERRUN_LEARNER__MODEL"]



@pytest.mark.parametrize("name", ["riverrun-scorer", "riverrun-learner", "riverrun-judge"])
def test_every_container_runs_a_command_riverrun_knows(name: str) -> None:
    args = container(name)["args"]
    # The image's entry point is `riverrun --log-format json`.
    parsed = parse_args(["--log-format", "json", *args])
    assert parsed.command == args[0]


# -- the overlay as kustomize renders it -------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
def test_the_rendered_overlay_validates_object_by_object() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True,
                              text=True, check=True, timeout=120).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert len(objects) == len(base_objects()) + 1  # and the namespace
    for doc in objects:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "riverrun"
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in objects}
    brokers = by_key[("ConfigMap", "riverrun-config")]["data"]["RIVERRUN_KAFKA__BOOTSTRAP_SERVERS"]
    trigger = by_key[("ScaledObject", "riverrun-scorer")]["spec"]["triggers"][0]
    assert trigger["metadata"]["bootstrapServers"] == brokers
    assert ("Secret", "riverrun-secrets") in by_key
    for (kind, _), doc in by_key.items():
        if kind == "Deployment":
            for spec in doc["spec"]["template"]["spec"]["containers"]:
                assert spec["image"].startswith("registry.example.com/riverrun:")
