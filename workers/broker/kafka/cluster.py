"""Local Apache Kafka KRaft clusters: N combined broker+controller JVMs on 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from riverrun.workers.broker.kafka.classpath import (
    java_binary,
    log4j_config_path,
    resolve_classpath,
)
from riverrun.workers.broker.kafka.config import (
    BrokerTls,
    NodePorts,
    node_properties,
    render_properties,
)
from riverrun.workers.broker.process import (
    BrokerError,
    BrokerProcess,
    accepts_connections,
    free_port,
    wait_until,
)

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
FORMAT_TIMEOUT_S = 120.0
# A small heap: tests start three of these on a two-core machine next to the code under test.
JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
               "-Djava.awt.headless=true")


def new_cluster_id() -> str:
    """Make a KRaft cluster id: a random UUID in URL-safe base64, as `kafka-storage random-uuid`."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # A leading '-' would read as a flag to the storage tool's argument parser.
        if not text.startswith("-"):
            return text


def read_meta_property(meta: Path, key: str) -> str | None:
    """One value of a node's meta.properties, or None when absent."""
    try:
        lines = meta.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


class KafkaNode:
    """One combined broker+controller node: its ports, its directory and its JVM."""

    def __init__(self, ports: NodePorts, directory: Path, argv: list[str]) -> None:
        self.ports = ports
        self.directory = directory
        self.argv = argv
        self.process: BrokerProcess | None = None

    @property
    def node_id(self) -> int:
        """The KRaft node id."""
        return self.ports.node_id

    @property
    def address(self) -> str:
        """host:port of its broker listener."""
        return f"127.0.0.1:{self.ports.broker}"

    def start(self) -> None:
        """Start the JVM (output to `kafka.out` in the node's directory)."""
        self.process = BrokerProcess(self.argv, self.directory / "kafka.out", cwd=self.directory)
        self.process.start()

    def alive(self) -> bool:
        """Whether its JVM runs (or is paused)."""
        return self.process is not None and self.process.alive()


class KafkaCluster:
    """A running local Apache Kafka KRaft cluster; stop it (or use `with`) to end every JVM."""

    engine = "kafka"

    def __init__(self, nodes: list[KafkaNode], root: Path, owns_root: bool,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self._nodes = {node.node_id: node for node in nodes}
        self.root = root
        self._owns_root = owns_root
        self._start_timeout_s = start_timeout_s

    @property
    def bootstrap_servers(self) -> str:
        """"127.0.0.1:P1,127.0.0.1:P2,…" for Kafka clients."""
        return ",".join(node.address for node in self._nodes.values())

    @property
    def tls_bootstrap_servers(self) -> str:
        """The TLS listeners, "127.0.0.1:P1,…"; empty when the cluster was started without TLS."""
        return ",".join(f"127.0.0.1:{node.ports.tls}" for node in self._nodes.values()
                        if node.ports.tls is not None)

    @property
    def nodes(self) -> list[int]:
        """Node ids, in order."""
        return sorted(self._nodes)

    def node(self, node_id: int) -> KafkaNode:
        """One node by id."""
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id} in this cluster (nodes {self.nodes})") from None

    def alive(self) -> bool:
        """Whether any node's JVM runs."""
        return any(node.alive() for node in self._nodes.values())

    def stop_node(self, node_id: int) -> None:
        """SIGTERM the node and wait until it exits (SIGKILL after a bound)."""
        process = self.node(node_id).process
        if process is not None:
            process.stop()

    def restart_node(self, node_id: int) -> None:
        """Start a stopped or killed node again on its data dir and ports; wait until it serves."""
        node = self.node(node_id)
        if node.alive():
            self.stop_node(node_id)
        node.start()
        self._wait_serving([node], self._start_timeout_s)

    def restart(self) -> None:
        """Stop every node (SIGTERM, together) and start them all again on their data."""
        running = [n.process for n in self._nodes.values() if n.process is not None]
        for process in running:
            process.signal(signal.SIGCONT)
            process.signal(signal.SIGTERM)
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            list(pool.map(lambda p: p.stop(), running))
        for node in self._nodes.values():
            node.start()
        self._wait_serving(list(self._nodes.values()), self._start_timeout_s)

    def leader_of(self, topic: str, partition: int, timeout_s: float = 10.0) -> int:
        """Return the node id leading `topic`/`partition` now, from the cluster's metadata."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        try:
            metadata = admin.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise BrokerError(
                f"no metadata for {topic} from {self.bootstrap_servers}: {exc.args[0]}"
            ) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or partition not in found.partitions:
            raise BrokerError(f"no metadata for {topic}[{partition}]: {found and found.error}")
        leader = int(found.partitions[partition].leader)
        if leader < 0:
            raise BrokerError(f"{topic}[{partition}] has no leader right now")
        return leader

    def stop(self) -> None:
        """Stop every node; a temp data dir is removed, a given one is kept."""
        running = [node.process for node in self._nodes.values() if node.process is not None]
        if self._owns_root:
            # The data is deleted next: nothing to gain from a controlled shutdown.
            for process in running:
                process.kill()
        else:
            for process in running:
                process.signal(signal.SIGCONT)
                process.signal(signal.SIGTERM)
            # Stopped together, so the last brokers do not wait for a quorum that has left.
            with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
                list(pool.map(lambda p: p.stop(), running))
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        logger.info("kafka cluster %s stopped", self.bootstrap_servers)

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wait_serving(self, nodes: list[KafkaNode], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s

        def serving() -> bool:
            for node in nodes:
                if not node.alive():
                    assert node.process is not None
                    raise BrokerError(
                        f"Kafka node {node.node_id} exited; {node.directory}/server.log ends "
                        f"with:\n{_tail(node.directory / 'server.log')}\n"
                        f"{node.process.log_tail()}"
                    )
                if not accepts_connections("127.0.0.1", node.ports.broker):
                    return False
            return _metadata_node_ids(self.bootstrap_servers) >= set(self.nodes)

        wait_until(serving, max(0.0, deadline - time.monotonic()),
                   f"Kafka nodes {[n.node_id for n in nodes]} serving on {self.bootstrap_servers}",
                   interval_s=0.2)


def _metadata_node_ids(bootstrap_servers: str) -> set[int]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from riverrun.workers.broker.process import _SILENT

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": _SILENT})  # type: ignore[dict-item]  # confluent-kafka takes a Logger here; its stubs say str
    try:
        return set(admin.list_topics(timeout=2.0).brokers)
    except KafkaException:
        return set()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_kafka(
    nodes: int = 1,
    port: int | None = None,
    data_dir: Path | None = None,
    config: Mapping[str, str] | None = None,
    start_timeout_s: float = START_TIMEOUT_S,
    tls: BrokerTls | None = None,
) -> KafkaCluster:
    """Start an Apache Kafka KRaft cluster of `nodes` combined nodes and wait until it serves.

    Args:
        nodes: how many broker+controller nodes (static quorum of all of them).
        port: broker listener of node 0; node i uses port+i. Free ports when None.
        data_dir: kept across runs (a node restarted on it keeps its log); a temp dir,
            removed on stop, when None.
        config: server properties applied last, over riverrun's defaults.
        start_timeout_s: bound on the wait for every node to serve.
        tls: a TLS listener on each node beside the plaintext one (`tls_bootstrap_servers`).

    Raises:
        BrokerUnavailableError: java or mvn is missing, or Maven Central cannot be reached.
        BrokerError: a node did not come up; the message carries its log's end.

    """
    if nodes < 1:
        raise ValueError(f"nodes={nodes}: a cluster needs at least one node")
    java = java_binary()
    classpath = os.pathsep.join(str(jar) for jar in resolve_classpath())
    owns_root = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="riverrun-kafka-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    ports = [
        NodePorts(i, port + i if port else free_port(), free_port(),
                  free_port() if tls is not None else None)
        for i in range(nodes)
    ]
    cluster_id = _existing_cluster_id(root, nodes) or new_cluster_id()
    members: list[KafkaNode] = []
    for node_ports in ports:
        directory = root / f"node-{node_ports.node_id}"
        directory.mkdir(parents=True, exist_ok=True)
        properties = node_properties(node_ports, ports, directory / "data", config, tls)
        (directory / "server.properties").write_text(render_properties(properties))
        argv = [
            java, *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={log4j_config_path()}",
            f"-Driverrun.log.dir={directory}",
            f"-Dkafka.logs.dir={directory}",
            "-cp", classpath, "kafka.Kafka", str(directory / "server.properties"),
        ]
        members.append(KafkaNode(node_ports, directory, argv))
    cluster = KafkaCluster(members, root, owns_root, start_timeout_s)
    try:
        with ThreadPoolExecutor(max_workers=nodes) as pool:
            list(pool.map(lambda n: _format(java, classpath, n, cluster_id), members))
        for member in members:
            member.start()
        cluster._wait_serving(members, start_timeout_s)
    except BaseException:
        cluster.stop()
        raise
    logger.info("kafka %d-node cluster serving on %s (data %s)", nodes,
                cluster.bootstrap_servers, root)
    return cluster


def _existing_cluster_id(root: Path, nodes: int) -> str | None:
    for i in range(nodes):
        found = read_meta_property(root / f"node-{i}" / "data" / "meta.properties", "cluster.id")
        if found:
            return found
    return None


def _format(java: str, classpath: str, node: KafkaNode, cluster_id: str) -> None:
    if (node.directory / "data" / "meta.properties").is_file():
        return
    argv = [
        java, "-Xmx256m", f"-Dlog4j2.configurationFile={log4j_config_path()}",
        f"-Driverrun.log.dir={node.directory}", "-cp", classpath, "kafka.tools.StorageTool",
        "format", "--config", str(node.directory / "server.properties"),
        "--cluster-id", cluster_id, "--ignore-formatted",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S,
                            check=False)
    if result.returncode != 0:
        raise BrokerError(
            f"formatting Kafka node {node.node_id} in {node.directory} failed: "
            f"{(result.stdout + result.stderr).strip()[-2000:]}"
        )
