"""riverrun processes started as an operator starts them, through the CLI, and watched from outside.

Each `Worker` owns one OS process, its log file and, when it has one, its /metrics port. The
harness reads readiness, metrics, resident memory and open file descriptors the way a
supervisor would, and kills only the processes it started, by their id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from riverrun.schemas import TopicSettings
from riverrun.workers.broker.process import free_port

RIVERRUN = str(Path(sys.executable).parent / "riverrun")
SIGNING_KEY = "reliability-signing-key-of-32-bytes"


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll `condition` until it holds; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Worker:
    """One riverrun process, its log and its probes."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path,
                 metrics_port: int | None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log = log
        self.metrics_port = metrics_port
        self._log_handle = log.open("ab")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self._log_handle,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._terminated = False

    @property
    def pid(self) -> int:
        """The OS process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        """Send a signal to this process only; SIGTERM once (a second one, arriving while
        the interpreter finalises and its handlers are gone, would kill a clean exit)."""
        if signum == signal.SIGTERM:
            if self._terminated:
                return
            self._terminated = True
        if self.alive():
            self.proc.send_signal(signum)

    def kill(self) -> int:
        """SIGKILL and reap; returns the exit code (-9)."""
        self.signal(signal.SIGKILL)
        return self.proc.wait(30)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit; returns its code."""
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM (finish, flush, commit, leave), SIGKILL after `timeout`."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if not self._log_handle.closed:
            self._log_handle.close()

    def output(self) -> str:
        """Everything the process logged so far."""
        if not self._log_handle.closed:
            self._log_handle.flush()
        return self.log.read_text(errors="replace")

    # -- probes --------------------------------------------------------------------------

    def probe(self, path: str) -> int:
        """HTTP status of /livez, /readyz or /metrics; 0 when nothing answers."""
        if self.metrics_port is None:
            raise ValueError(f"{self.name} was started without a metrics port")
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # loopback
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def ready(self) -> bool:
        """/readyz answers 200."""
        return self.probe("/readyz") == 200

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of /metrics by (name, labels); empty when nothing answers."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # loopback
                text = response.read().decode()
        except OSError:
            return {}
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and wanted <= ls)

    def rss_bytes(self) -> int:
        """Resident set size, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process (all its threads), from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int:
        """Open file descriptors, from /proc."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@dataclass
class Workers:
    """Every process a test started; all are stopped at teardown, each by its own id."""

    directory: Path
    started: list[Worker] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              metrics: bool = True, options: Sequence[str] = ("--log-format", "text")) -> Worker:
        """Start `riverrun [options] ...argv`; a metrics port is added when `metrics`."""
        port = free_port() if metrics else None
        full = [RIVERRUN, *options, *argv]
        if port is not None:
            full += ["--metrics-port", str(port)]
        process_env = {**os.environ, **(env or {})}
        worker = Worker(name, full, process_env, self.directory / f"{name}-{len(self.started)}.log",
                        port)
        self.started.append(worker)
        return worker

    def logs(self, prefix: str = "") -> str:
        """The logs of every process whose name starts with `prefix`."""
        return "\n".join(w.output() for w in self.started if w.name.startswith(prefix))

    def stop_all(self) -> None:
        """SIGTERM everything still running, SIGKILL what does not stop."""
        for worker in self.started:
            with contextlib.suppress(Exception):
                worker.signal(signal.SIGTERM)
        for worker in self.started:
            with contextlib.suppress(Exception):
                worker.stop(timeout=30)

    def __iter__(self) -> Iterator[Worker]:
        return iter(self.started)


def scorer_argv(
    bootstrap: str,
    topics: TopicSettings,
    group: str,
    worker_id: str,
    *,
    model_file: Path | None = None,
    model_name: str = "phishing",
    exactly_once: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """`riverrun score` on these topics: a model file, or the registry when none is given."""
    source = (["--model-file", str(model_file), "--model-name", model_name] if model_file
              else ["--topic-models", topics.models, "--topic-artifacts", topics.artifacts,
                    "--signing-key", SIGNING_KEY])
    return [
        "score", "--bootstrap-servers", bootstrap,
        "--topic-requests", topics.requests, "--topic-predictions", topics.predictions,
        "--topic-dead-letters", topics.dead_letters,
        *source, "--group-id", group, "--worker-id", worker_id,
        "--statistics-interval-ms", "1000",
        *(["--exactly-once"] if exactly_once else []), *extra,
    ]  # fmt: skip


def learner_argv(bootstrap: str, topics: TopicSettings, model: str,
                 extra: Sequence[str] = ()) -> list[str]:
    """`riverrun learn` of `model` on these topics."""
    return [
        "learn", "--bootstrap-servers", bootstrap,
        "--topic-feedback", topics.feedback, "--topic-predictions", topics.predictions,
        "--topic-examples", topics.examples, "--topic-outcomes", topics.outcomes,
        "--topic-dead-letters", topics.dead_letters, "--topic-models", topics.models,
        "--topic-artifacts", topics.artifacts, "--signing-key", SIGNING_KEY,
        "--model", model, *extra,
    ]  # fmt: skip
