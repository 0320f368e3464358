"""Security settings: the production profile refuses plaintext and unverified TLS, no secret
ever reaches a log, and TLS is checked end to end: Apache Kafka serves it (a production-profile
scorer answers over it with the right CA and never connects with a wrong one); Tansu is probed
and skipped with what it does."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from riverrun.schemas import KafkaSettings
from riverrun.workers.broker.process import BrokerProcess, free_port, metadata_brokers, wait_until
from riverrun.workers.broker.tansu import tansu_binary
from tests.conftest import fresh_kafka

from .conftest import Figures, create_topics
from .harness.loadgen import LoadGenerator, request_payload
from .harness.processes import Workers, learner_argv, scorer_argv, wait_for
from .scenario import reckon

pytestmark = pytest.mark.reliability

REFUSED = {
    "plaintext": ([], "SECURITY_PROTOCOL is PLAINTEXT"),
    "sasl-plaintext": (["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN"],
                       "SECURITY_PROTOCOL is SASL_PLAINTEXT"),
    "certificate-unverified": (["--security-protocol", "SSL", "--kafka-option",
                                "enable.ssl.certificate.verification=false"],
                               "enable.ssl.certificate.verification=false"),
    "host-name-unverified": (["--security-protocol", "SSL", "--kafka-option",
                              "ssl.endpoint.identification.algorithm=none"],
                             "ssl.endpoint.identification.algorithm=none"),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a broker certificate it signed for 127.0.0.1, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    root = tmp_path_factory.mktemp("pki")

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], cwd=root, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
            "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=127.0.0.1")
    (root / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "broker.pem", "-days", "2", "-extfile", "san.cnf")
    return {name: root / f"{name}.pem" for name in ("ca", "other-ca", "broker")} | {
        "broker-key": root / "broker.key"}


def test_the_production_profile_refuses_insecure_settings(
    workers: Workers, model_file: Path, pki: dict[str, Path], figures: Figures,
) -> None:
    base = ["score", "--bootstrap-servers", "127.0.0.1:9", "--model-file", str(model_file)]
    started = {case: workers.start(f"refused-{case}", [*base, *extra], metrics=False,
                                   options=["--log-format", "text", "--profile", "production"])
               for case, (extra, _) in REFUSED.items()}
    started["insecure-dev"] = workers.start("refused-insecure-dev", [
        "learn", "--bootstrap-servers", "127.0.0.1:9", "--security-protocol", "SSL",
        "--ssl-ca-location", str(pki["ca"]), "--insecure-dev", "--model", "m"],
        {"RIVERRUN_PROFILE": "production"}, metrics=False)
    accepted = workers.start("accepted", [*base, "--security-protocol", "SASL_SSL",
                                          "--sasl-mechanism", "PLAIN", "--sasl-username", "u",
                                          "--sasl-password", "p",
                                          "--ssl-ca-location", str(pki["ca"])],
                             {"RIVERRUN_PROFILE": "production"}, metrics=False)
    expected = {case: why for case, (_, why) in REFUSED.items()} | {
        "insecure-dev": "RIVERRUN_REGISTRY__INSECURE_DEV"}
    outcome = {}
    for case, worker in started.items():
        code = worker.wait(60)
        outcome[case] = code
        assert code == 2, (case, worker.output())
        assert "production profile refuses to start" in worker.output(), case
        assert expected[case] in worker.output(), (case, worker.output())
    wait_for(lambda: "effective settings" in accepted.output(), 30,
             "the accepted settings to start a scorer")
    assert accepted.alive(), accepted.output()
    figures.record("production_profile", refused=sorted(outcome), exit_codes=outcome,
                   accepted="SASL_SSL with a CA")


def test_no_secret_ever_reaches_a_log(
    kafka: KafkaSettings, make_topics: Any, workers: Workers, model_file: Path,
    pki: dict[str, Path], figures: Figures,
) -> None:
    secrets = {name: f"{name}-{uuid.uuid4().hex}" for name in
               ("sasl-password", "signing-key", "key-password", "option-password",
                "option-secret")}
    security = ["--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN",
                "--sasl-username", "riverrun", "--sasl-password", secrets["sasl-password"],
                "--ssl-ca-location", str(pki["ca"]),
                "--ssl-key-password", secrets["key-password"],
                "--kafka-option", f"sasl.password={secrets['option-password']}",
                "--kafka-option", f"sasl.oauthbearer.client.secret={secrets['option-secret']}"]
    topics = make_topics()
    json_debug = ["--log-format", "json", "--log-level", "DEBUG"]
    scorer = workers.start("secret-scorer", [*scorer_argv(
        kafka.bootstrap_servers, topics, f"secret-{uuid.uuid4().hex[:8]}", "s",
        model_file=model_file), *security],
        {"RIVERRUN_REGISTRY__SIGNING_KEY": secrets["signing-key"]}, options=json_debug)
    learner = workers.start("secret-learner", [*learner_argv(
        kafka.bootstrap_servers, topics, "m"), *security, "--signing-key",
        secrets["signing-key"]], options=json_debug)
    for worker in (scorer, learner):
        # The TLS handshake with a plaintext broker fails: errors get logged, with context.
        wait_for(lambda w=worker: "effective settings" in w.output(), 30, f"{worker.name} start")
        wait_for(lambda w=worker: w.output().count("\n") > 10 or "waiting for Kafka" in w.output()
                 or not w.alive(), 30, f"{worker.name} to log its connection failures")
        worker.kill()  # only its logs matter
    logs = workers.logs("secret-")
    leaked = sorted(name for name, value in secrets.items() if value in logs)
    figures.record("secrets_in_logs", secrets=len(secrets), log_lines=logs.count("\n"),
                   leaked=leaked)
    assert "**********" in logs  # the settings were logged, masked
    assert leaked == []


@pytest.fixture
def tls_tansu(pki: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    """Tansu asked to serve TLS with the test certificate; yields its bootstrap address."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    bundle = tmp_path / "broker-bundle.pem"
    bundle.write_text(pki["broker"].read_text() + pki["broker-key"].read_text())
    process = BrokerProcess([tansu_binary(), "broker", "--listener-url", url,
                             "--advertised-listener-url", url, "--cert", str(bundle)],
                            tmp_path / "tansu.log")
    process.start()
    try:
        wait_until(lambda: process.alive() and _accepts(port), 30, "Tansu listening")
        yield f"127.0.0.1:{port}"
    finally:
        process.stop(timeout_s=2.0)


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _answers(bootstrap: str, **tls: str) -> bool:
    """Whether the broker answers metadata, over TLS when `tls` settings are given."""
    if not tls:
        return metadata_brokers(bootstrap, timeout_s=3.0) > 0
    return _metadata_with(KafkaSettings.model_validate({"bootstrap_servers": bootstrap, **tls}))


def _metadata_with(settings: KafkaSettings) -> bool:
    import logging

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("reliability.tls")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    admin = AdminClient(settings.client_config({"logger": quiet}))
    try:
        return len(admin.list_topics(timeout=3).brokers) > 0
    except KafkaException:
        return False


def test_tls_to_the_embedded_broker_checks_the_ca(
    tls_tansu: str, pki: dict[str, Path], figures: Figures,
) -> None:
    right = _answers(tls_tansu, security_protocol="SSL", ssl_ca_location=str(pki["ca"]))
    wrong = _answers(tls_tansu, security_protocol="SSL", ssl_ca_location=str(pki["other-ca"]))
    plain = _answers(tls_tansu)
    figures.record("tls_embedded_broker", right_ca=right, wrong_ca=wrong, plaintext=plain)
    if not right:
        pytest.skip("the embedded broker (Tansu) does not serve TLS: with --cert it still "
                    f"answers plaintext ({plain}) and no TLS handshake succeeds with the CA "
                    "that signed its certificate (its CLI refuses --cert with --key)")
    assert not wrong, "TLS succeeded with a CA that did not sign the broker's certificate"


@pytest.fixture(scope="module")
def tls_kafka(pki: dict[str, Path]) -> Iterator[Any]:
    """A one-node Apache Kafka with a TLS listener using the test broker certificate."""
    from riverrun.workers.broker.kafka import BrokerTls

    tls = BrokerTls(pki["broker"].read_text() + pki["ca"].read_text(),
                    pki["broker-key"].read_text())
    with fresh_kafka(tls=tls) as cluster:
        yield cluster


def test_a_production_scorer_answers_over_tls_and_refuses_a_wrong_ca(
    tls_kafka: Any, workers: Workers, model_file: Path, rows: list[dict[str, float]],
    pki: dict[str, Path], figures: Figures,
) -> None:
    bootstrap = tls_kafka.tls_bootstrap_servers
    right = KafkaSettings.model_validate({"bootstrap_servers": bootstrap,
                                          "security_protocol": "SSL",
                                          "ssl_ca_location": str(pki["ca"])})
    wrong = right.model_copy(update={"ssl_ca_location": str(pki["other-ca"])})
    assert _metadata_with(right), "no TLS handshake with the CA that signed the certificate"
    assert not _metadata_with(wrong), "TLS succeeded with a CA that did not sign the certificate"
    assert not _answers(bootstrap), "the TLS listener answered plaintext"

    topics = create_topics(right, 2)
    tls_flags = ["--security-protocol", "SSL"]
    production = ("--log-format", "text", "--profile", "production")
    group = f"tls-{uuid.uuid4().hex[:8]}"
    scorer = workers.start("tls-scorer", scorer_argv(
        bootstrap, topics, group, "a", model_file=model_file,
        extra=[*tls_flags, "--ssl-ca-location", str(pki["ca"])]), options=production)
    refused = workers.start("tls-wrong-ca", scorer_argv(
        bootstrap, topics, f"{group}-wrong", "b", model_file=model_file,
        extra=[*tls_flags, "--ssl-ca-location", str(pki["other-ca"])]), options=production)
    wait_for(scorer.ready, 60, "the TLS scorer to be ready")
    load = LoadGenerator(right, topics.requests, request_payload(rows), total=500,
                         rate=500).start()
    load.join(60)
    wait_for(lambda: scorer.metric_sum("riverrun_scorer_consumed_total") >= 500, 60,
             "every request scored over TLS")
    result = reckon(right, topics, load.acked)
    wait_for(lambda: "certificate verify failed" in refused.output(), 30,
             "the wrong-CA scorer to say why it cannot connect")
    assert refused.alive() and not refused.ready(), refused.output()[-2000:]
    figures.record("tls_apache_kafka", right_ca=True, wrong_ca=False, plaintext_on_tls=False,
                   scorer_over_tls={"requests": len(load.acked),
                                    "missing": result.delivery.missing},
                   wrong_ca_scorer="alive, not ready, logs 'certificate verify failed'")
    assert result.delivery.missing == 0, result.delivery
    assert scorer.stop() == 0 and refused.stop() == 0
