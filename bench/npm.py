"""npm packages installed once into a git-ignored folder, for the benchmarks and the tests.

``npm_install(directory, package_json, required)`` writes ``package_json`` into ``directory``,
runs ``npm install`` there when the folder does not hold exactly that ``package.json`` already
(a stamp file remembers the last good install) or a required package is missing, and says why
it cannot (:class:`Unavailable`) when node or npm is missing, too old, or npm fails (a registry
that cannot be reached is said within a minute, not after npm's default retries).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# npm's own cache makes a second install quick; a registry that cannot be reached is said
# within a minute rather than after npm's default retries (minutes).
NPM_INSTALL = (
    "install",
    "--no-audit",
    "--no-fund",
    "--prefer-offline",
    "--loglevel=error",
    "--fetch-retries=1",
    "--fetch-retry-mintimeout=2000",
    "--fetch-retry-maxtimeout=10000",
    "--fetch-timeout=30000",
)
STAMP = ".installed"


class Unavailable(Exception):
    """What npm should install cannot run on this machine (the message says why)."""


@dataclass(frozen=True, slots=True)
class Installed:
    directory: Path
    node: Path  # the node executable
    node_version: str  # "v20.20.2"
    install_s: float  # 0.0 when the folder was up to date
    versions: dict[str, str] = field(default_factory=dict)  # package -> installed version

    def module(self, name: str) -> Path:
        return self.directory / "node_modules" / name


def node_version(min_major: int, what: str) -> tuple[Path, str]:
    """node on PATH and its version; :class:`Unavailable` without node and npm, or too old."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise Unavailable(f"node and npm are needed for {what} (not on PATH)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        raise Unavailable(f"cannot read node's version ({version!r})") from None
    if major < min_major:
        raise Unavailable(f"{what} needs node {min_major} or newer, this is {version}")
    return Path(node), version


def npm_install(
    directory: Path,
    package_json: str,
    required: tuple[str, ...],
    *,
    what: str,
    min_node: int = 18,
    timeout: float = 600.0,
) -> Installed:
    """The packages of ``package_json`` in ``directory/node_modules`` (installed once)."""
    node, version = node_version(min_node, what)
    npm = shutil.which("npm")
    assert npm is not None  # node_version checked it
    stamp = directory / STAMP

    def present() -> bool:
        return all((directory / "node_modules" / r / "package.json").exists() for r in required)

    install_s = 0.0
    directory.mkdir(parents=True, exist_ok=True)
    # One install at a time per folder: tests running in parallel processes share it.
    with open(directory / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        install_s = _install(directory, package_json, stamp, npm, present, what, timeout)
    versions = {}
    for name in required:
        pkg = directory / "node_modules" / name / "package.json"
        versions[name] = str(json.loads(pkg.read_text()).get("version"))
    return Installed(directory, node, version, round(install_s, 1), versions)


def _install(
    directory: Path,
    package_json: str,
    stamp: Path,
    npm: str,
    present: Callable[[], bool],
    what: str,
    timeout: float,
) -> float:
    """npm install unless the stamp says the same package.json is installed; its seconds."""
    install_s = 0.0
    if not (stamp.exists() and stamp.read_text() == package_json and present()):
        (directory / "package.json").write_text(package_json)
        t0 = time.monotonic()
        try:
            done = subprocess.run(
                [npm, *NPM_INSTALL],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(f"npm install ({what}) took longer than {timeout:g} s") from None
        install_s = time.monotonic() - t0
        if done.returncode != 0 or not present():
            said = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            first = [
                ln for ln in said if not ln.removeprefix("npm error").strip().startswith("at ")
            ]
            raise Unavailable(
                f"npm install ({what}) failed (rc={done.returncode}) after {install_s:.0f} s: "
                + " / ".join(first[:4])[:600]
            )
        stamp.write_text(package_json)
    return install_s
