"""The Apache Kafka classpath: resolved once from Maven Central into ~/.m2, then cached."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path

from riverrun.workers.broker.process import BrokerUnavailableError

logger = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S = 600.0
DEPENDENCY_PLUGIN = "3.8.1"


def pom_path() -> Path:
    """Return the committed pom.xml that pins the Kafka version."""
    return Path(str(files("riverrun.workers.broker.kafka").joinpath("pom.xml")))


def log4j_config_path() -> Path:
    """Return the log4j2 configuration that sends broker logs to the node's data dir."""
    return Path(str(files("riverrun.workers.broker.kafka").joinpath("log4j2.yaml")))


def kafka_version() -> str:
    """Return the Kafka version pinned in pom.xml."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_path().read_text())
    if match is None:
        raise RuntimeError(f"{pom_path()} has no <kafka.version>: the package is damaged")
    return match.group(1).strip()


def cache_dir(version: str | None = None) -> Path:
    """`$XDG_CACHE_HOME/riverrun/kafka-<version>` (XDG default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "riverrun" / f"kafka-{version or kafka_version()}"


def java_binary() -> str:
    """Path of `java`; raise with what to install when it is missing."""
    java = shutil.which("java")
    if java is None:
        raise BrokerUnavailableError(
            "java is not on PATH: Apache Kafka needs a Java 17+ runtime "
            "(e.g. apt-get install openjdk-17-jre-headless), or use --engine tansu"
        )
    return java


def _mvn_binary() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerUnavailableError(
            "mvn is not on PATH: riverrun fetches Apache Kafka's jars from Maven Central with "
            "Maven (e.g. apt-get install maven), or use --engine tansu"
        )
    return mvn


def cached_classpath(version: str | None = None) -> list[Path] | None:
    """Return the cached classpath when every jar in it still exists, else None."""
    path = cache_dir(version) / "classpath.txt"
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    jars = [Path(entry) for entry in text.split(os.pathsep) if entry]
    if not jars or not all(jar.is_file() for jar in jars):
        logger.info("cached Kafka classpath %s names missing jars; resolving again", path)
        return None
    return jars


def resolve_classpath() -> list[Path]:
    """Return the jars to run Kafka with: from the cache file, else resolved by Maven.

    Raises:
        BrokerUnavailableError: java or mvn is missing, or Maven Central cannot be reached.

    """
    java_binary()
    version = kafka_version()
    jars = cached_classpath(version)
    if jars is not None:
        return jars
    mvn = _mvn_binary()
    target = cache_dir(version)
    target.mkdir(parents=True, exist_ok=True)
    # Maven writes into a temp file; the rename publishes the cache only once it is complete.
    with tempfile.TemporaryDirectory(prefix="riverrun-mvn-") as tmp:
        output = Path(tmp) / "classpath.txt"
        argv = [
            # Fully qualified, so an offline Maven names the transfer that failed.
            mvn, "-q", "-B", "-f", str(pom_path()),
            f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:build-classpath",
            f"-Dmdep.outputFile={output}",
        ]
        logger.info("resolving Apache Kafka %s from Maven Central into ~/.m2", version)
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S, check=False,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerUnavailableError(
                f"mvn did not resolve Apache Kafka {version} within {RESOLVE_TIMEOUT_S:.0f}s: "
                "check that Maven Central (repo.maven.apache.org) is reachable"
            ) from exc
        if result.returncode != 0 or not output.is_file():
            detail = (result.stdout + result.stderr).strip()[-2000:]
            unreachable = any(
                marker in detail
                for marker in ("Could not transfer", "UnknownHost", "Connection refused",
                               "Network is unreachable", "timed out", "Could not resolve",
                               "No plugin found", "offline mode")
            )
            reason = (
                "Maven Central (repo.maven.apache.org) cannot be reached: check the network "
                "or proxy (~/.m2/settings.xml), or use --engine tansu"
                if unreachable
                else "see Maven's output below"
            )
            raise BrokerUnavailableError(
                f"mvn could not resolve Apache Kafka {version}: {reason}\n{detail}"
            )
        text = output.read_text().strip()
        staged = target / "classpath.txt.tmp"
        staged.write_text(text + "\n")
        staged.replace(target / "classpath.txt")
    jars = cached_classpath(version)
    if jars is None:
        raise BrokerUnavailableError(
            f"mvn reported success but the classpath in {target} names missing jars: "
            "remove ~/.m2/repository/org/apache/kafka and try again"
        )
    return jars
