"""server.properties rendering for local Apache Kafka nodes, and the broker CLI's pure parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from riverrun.workers.broker.command import parse_config_pairs
from riverrun.workers.broker.kafka.classpath import cache_dir, kafka_version
from riverrun.workers.broker.kafka.cluster import new_cluster_id, read_meta_property
from riverrun.workers.broker.kafka.config import (
    BrokerTls,
    NodePorts,
    node_properties,
    quorum_voters,
    render_properties,
)


def _nodes(count: int) -> list[NodePorts]:
    return [NodePorts(i, 9092 + i, 19092 + i) for i in range(count)]


def test_one_node_uses_replication_one_and_min_isr_one() -> None:
    nodes = _nodes(1)
    props = node_properties(nodes[0], nodes, Path("/data/node-0"))
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["default.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["controller.quorum.voters"] == "0@127.0.0.1:19092"


def test_three_nodes_replicate_three_ways_with_min_isr_two() -> None:
    nodes = _nodes(3)
    props = node_properties(nodes[2], nodes, Path("/data/node-2"))
    assert props["node.id"] == "2"
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:19094"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9094"
    assert props["log.dirs"] == "/data/node-2"
    assert props["process.roles"] == "broker,controller"


def test_five_nodes_cap_replication_at_three() -> None:
    nodes = _nodes(5)
    assert node_properties(nodes[0], nodes, Path("/d"))["default.replication.factor"] == "3"
    assert quorum_voters(nodes).count("@127.0.0.1:") == 5


def test_user_overrides_apply_last() -> None:
    nodes = _nodes(1)
    props = node_properties(nodes[0], nodes, Path("/d"),
                            {"num.partitions": "12", "min.insync.replicas": "1", "x.y": "z"})
    assert props["num.partitions"] == "12"
    assert props["x.y"] == "z"
    assert list(props)[-1] == "x.y"


def test_test_friendly_defaults() -> None:
    nodes = _nodes(1)
    props = node_properties(nodes[0], nodes, Path("/d"))
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"


def test_render_properties_is_one_line_per_key_and_escapes_backslashes() -> None:
    text = render_properties({"a": "1", "log.dirs": r"C:\kafka"})
    assert text == "a=1\nlog.dirs=C:\\\\kafka\n"


def test_a_tls_listener_goes_beside_the_plaintext_one_with_its_pem_on_one_line() -> None:
    nodes = [NodePorts(0, 9092, 9093, 9094)]
    tls = BrokerTls("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n",
                    "-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n")
    props = node_properties(nodes[0], nodes, Path("/d"), tls=tls)
    assert props["listeners"].endswith(",SSL://127.0.0.1:9094")
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9094"
    assert props["listener.security.protocol.map"].endswith(",SSL:SSL")
    assert props["ssl.keystore.type"] == "PEM"
    text = render_properties(props)
    assert ("ssl.keystore.key=-----BEGIN PRIVATE KEY-----\\nBBB\\n-----END PRIVATE KEY-----\n"
            in text)
    assert "ssl" not in render_properties(node_properties(nodes[0], nodes, Path("/d")))


def test_cluster_ids_are_22_char_urlsafe_and_never_look_like_flags() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_read_meta_property(tmp_path: Path) -> None:
    meta = tmp_path / "meta.properties"
    meta.write_text("#\nversion=1\ncluster.id=abc\nnode.id=0\n")
    assert read_meta_property(meta, "cluster.id") == "abc"
    assert read_meta_property(meta, "missing") is None
    assert read_meta_property(tmp_path / "absent", "cluster.id") is None


def test_cache_dir_honours_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir("9.9.9") == tmp_path / "riverrun" / "kafka-9.9.9"
    assert cache_dir().name == f"kafka-{kafka_version()}"


def test_config_pairs() -> None:
    assert parse_config_pairs(["a=1", "b.c=x=y"]) == {"a": "1", "b.c": "x=y"}
    assert parse_config_pairs(None) == {}
    with pytest.raises(SystemExit, match="not key=value"):
        parse_config_pairs(["novalue"])


def test_cached_classpath_is_dropped_when_a_jar_is_gone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from riverrun.workers.broker.kafka.classpath import cached_classpath

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    jar = tmp_path / "a.jar"
    jar.write_bytes(b"")
    cache = cache_dir("1.0")
    cache.mkdir(parents=True)
    (cache / "classpath.txt").write_text(f"{jar}:{tmp_path / 'b.jar'}\n")
    assert cached_classpath("1.0") is None
    (tmp_path / "b.jar").write_bytes(b"")
    assert cached_classpath("1.0") == [jar, tmp_path / "b.jar"]
