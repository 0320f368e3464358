"""Installed as a user installs it: one `riverrun` name in site-packages, a client that lives
beside a service's own `schemas.py` and `workers.py`, and a command line that says what to add
when the server extra is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_puts_only_riverrun_at_the_top_of_site_packages(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(ROOT)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    top = sorted(p.name for p in target.iterdir() if p.name != "bin")  # bin: the console script
    assert top == ["riverrun", "riverrun-0.1.0.dist-info"]
    package = target / "riverrun"
    assert sorted(p.name for p in package.iterdir()) == ["producers", "schemas", "workers"]
    assert not (package / "__init__.py").exists()  # a namespace: nothing runs on import
    assert (package / "schemas" / "jsonschema" / "PredictionRequested.json").is_file()
    assert (package / "workers" / "broker" / "kafka" / "pom.xml").is_file()
    assert (package / "workers" / "registry" / "allowed_globals.json").is_file()


def test_a_service_with_its_own_schemas_and_workers_modules_imports_the_client(
    tmp_path: Path,
) -> None:
    (tmp_path / "schemas.py").write_text("class Order:\n    pass\n")
    (tmp_path / "workers.py").write_text("POOL = 4\n")
    code = (
        "import sys\n"
        "from riverrun.producers import KafkaSettings, RiverrunClient\n"
        "import schemas, workers\n"
        "assert schemas.Order and workers.POOL == 4, 'the service keeps its own modules'\n"
        "assert KafkaSettings(bootstrap_servers='k:9092').bootstrap_servers == 'k:9092'\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'river', 'numpy', 'scipy', 'faust', 'prometheus_client', 'matplotlib', 'yaml'})\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_command_line_without_the_server_extra_says_what_to_install() -> None:
    # As if River were not installed: find_spec answers None for it, as it would.
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'river' else real(name, *a)\n"
        "from riverrun.workers import cli\n"
        "cli.find_spec = importlib.util.find_spec\n"
        "sys.exit(cli.main(['score', '--help']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'riverrun[server]'" in lines[0] and "river" in lines[0]
    assert not result.stdout
