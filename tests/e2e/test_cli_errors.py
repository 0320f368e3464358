"""What a person meets when something is off: a broker that does not answer, a port in use.

Each is one short answer naming the address or the flag, quickly, and a non-zero exit; no
traceback, no flood of librdkafka lines.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

RIVERRUN = str(Path(sys.executable).parent / "riverrun")
SPEC = str(Path(__file__).resolve().parents[2] / "deploy" / "specs" / "phishing-logreg.yaml")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run(*argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([RIVERRUN, "--log-format", "text", *argv], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    return result, time.monotonic() - started


NO_BROKER_COMMANDS = {
    "models list": ["models", "list"],
    "topics create": ["topics", "create"],
    "models release": ["models", "release", "fraud", "--spec", SPEC, "--insecure-dev"],
    "replay": ["replay", "--dataset", "phishing", "--limit", "10", "--no-progress"],
}


def test_no_broker_at_the_address_is_one_line_within_twenty_seconds(closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"
    with ThreadPoolExecutor(len(NO_BROKER_COMMANDS)) as pool:  # each waits out its 10 s probe
        results = dict(zip(NO_BROKER_COMMANDS, pool.map(
            lambda argv: run(*argv, "--bootstrap-servers", address),
            NO_BROKER_COMMANDS.values())))  # fmt: skip
    for name, (result, elapsed) in results.items():
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert result.returncode != 0, name
        assert elapsed < 20, name
        assert 1 <= len(lines) <= 5, (name, lines)
        assert any(address in line and "--bootstrap-servers" in line for line in lines), name
        assert "Traceback" not in result.stderr, name


def test_a_metrics_port_in_use_is_one_line_naming_the_flag(taken_port: int) -> None:
    result, _ = run("score", "--metrics-port", str(taken_port), "--insecure-dev",
                    "--bootstrap-servers", "127.0.0.1:1")
    assert result.returncode == 2
    assert f"port {taken_port} (--metrics-port) is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_embedded_brokers_port_in_use_is_one_line_naming_the_flag(taken_port: int) -> None:
    result, _ = run("broker", "--port", str(taken_port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"riverrun broker: port {taken_port} (--port) is in use: choose another, 0 for a free "
        "one, or stop what listens on it"]
