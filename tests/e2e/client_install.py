"""What `pip install riverrun` (no extras) brings: the names it puts at the top of site-packages
and the size of everything installed, dependencies included. Prints one JSON object.

    python tests/e2e/client_install.py            # or: make client-size

A scratch virtual environment is made and removed; pip and setuptools, which every environment
has before anything is installed, are not counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}


def installed(site: Path) -> dict[str, int]:
    """Bytes per distribution, from each one's RECORD (what it installed, scripts included)."""
    sizes: dict[str, int] = {}
    for info in sorted(site.glob("*.dist-info")):
        name = info.name.split("-")[0]
        if name.lower() in BOOTSTRAP:
            continue
        total = 0
        for line in (info / "RECORD").read_text().splitlines():
            path = (site / line.split(",")[0]).resolve()
            if path.is_file():
                total += path.stat().st_size
        sizes[name] = total
    return sizes


def main() -> int:
    """Install the project with no extras into a scratch environment and report on it."""
    with tempfile.TemporaryDirectory(prefix="riverrun-client-") as scratch:
        env = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        python = env / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True)
        (site,) = (env / "lib").glob("python3*/site-packages")
        sizes = installed(site)
        top = sorted(p.name for p in site.iterdir()
                     if p.name not in BOOTSTRAP and not p.name.startswith(("pip", "setuptools",
                                                                           "__pycache__")))
        ours = sorted(name for name in top if name.lower().startswith("riverrun"))
    report = {
        "distributions": len(sizes),
        "bytes": sum(sizes.values()),
        "megabytes": round(sum(sizes.values()) / 1e6, 1),
        "by_distribution_mb": {k: round(v / 1e6, 2) for k, v in
                               sorted(sizes.items(), key=lambda kv: -kv[1])},
        "riverrun_names_at_top": ours,
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
