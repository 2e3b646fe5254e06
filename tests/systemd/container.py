"""A throw-away Debian with a real systemd 252 as PID 1, booted with systemd-nspawn.

Nothing here ever runs systemd, systemd-tmpfiles or systemd-sysusers against this machine's own
root: the root file system is built with mmdebstrap under ``/var/tmp``, ``systemd-nspawn`` is
unpacked from its Debian packages (``apt-get download`` + ``dpkg -x``, never installed: the
package's install scripts would run systemd-tmpfiles and systemd-sysusers here), and every command
in the container goes through :meth:`Container.sh`, which checks that it enters the container's
root (its device and inode, and a marker file that exists only there) before it runs anything.

Cached between runs, under ``/var/tmp/edge-gateway-systemd-test/`` only:

- ``nspawn/``: systemd-nspawn and libsystemd-shared, unpacked;
- ``rootfs-<key>/``: Debian bookworm (minbase) with systemd, dbus, python3, mosquitto and its
  clients, and a venv in ``/opt/edge-gateway`` holding the gateway's dependencies (not the
  gateway: each run installs its freshly built wheel). ``<key>`` hashes the package list, the
  recipe and the dependencies in pyproject.toml, so a change there builds a new one.

Each run boots the cached root file system under an overlay (its writes go to the run's own
upper directory, ``/var/tmp/edge-gateway-systemd-run-<pid>-*``; the cache stays as built), in a
private mount namespace (also a tmpfs on ``/run/systemd``, which nspawn writes to), in its own
cgroup (``--keep-unit``), with ``--private-network``. :meth:`Container.close` powers it off (or
kills it), removes the cgroups leaf-first and deletes the run's directory; the next run also
removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/edge-gateway-systemd-test")
RUN_PREFIX = "edge-gateway-systemd-run-"
SUITE = "bookworm"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "mosquitto",
    "mosquitto-clients",
)
RECIPE = 1  # change when the way the root file system is made changes
VENV = "/opt/edge-gateway"
MARKER = "/etc/edge-gateway-systemd-test"  # written only into a run's root: the run's name
INBOX = "/mnt/host-files"  # files handed to the container (Container.put), read-only
NSPAWN_PACKAGES = ("systemd-container", "libsystemd-shared")
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
# A clean environment for everything that runs in the container or its root (no PIP_* of ours).
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "TERM": "dumb",
}


class Unavailable(RuntimeError):
    """Something the container needs is missing or failed; the message says what and the fix."""


def tail(text: str | bytes | None, lines: int = 15) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    what: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` bounded by ``timeout``; a failure raises :class:`Unavailable` naming ``what``.

    In a session of its own: on a timeout (or any interruption, a test timeout included) the
    whole process group goes, not only ``cmd`` (mmdebstrap's apt and dpkg, pip's builds).
    """
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise Unavailable(f"{what}: {exc.filename} is not installed") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise Unavailable(f"{what}: no result within {timeout:.0f} s\n{tail(err)}") from exc
        raise
    if proc.returncode != 0:
        raise Unavailable(f"{what} failed (exit {proc.returncode}):\n{tail(err) or tail(out)}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time (two test runs never build the same cache at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _need(*tools: str, fix: str = "") -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise Unavailable(f"missing on this machine: {', '.join(missing)}{fix}")


def check_host() -> None:
    """What every run needs; :class:`Unavailable` names what is missing."""
    if os.geteuid() != 0:
        raise Unavailable("booting a container with systemd-nspawn needs root")
    _need("unshare", "nsenter", "timeout", "mount", "cp", "rm", "chroot")
    if (
        not any(root.is_dir() for root in CGROUP_ROOTS)
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        raise Unavailable("no cgroup hierarchy under /sys/fs/cgroup to give the container")


def nspawn_dir() -> Path:
    """systemd-nspawn and its shared library, unpacked from Debian's packages (cached)."""
    target = CACHE / "nspawn"
    if (target / "usr/bin/systemd-nspawn").exists():
        return target
    with _locked(CACHE / ".lock"):
        if (target / "usr/bin/systemd-nspawn").exists():
            return target
        _need("apt-get", "dpkg")
        work = Path(tempfile.mkdtemp(prefix="nspawn-", dir=CACHE))
        try:
            debs = work / "debs"
            debs.mkdir()
            run(
                ["apt-get", "download", *NSPAWN_PACKAGES],
                timeout=180,
                cwd=debs,
                what="apt-get download systemd-container libsystemd-shared (is the Debian "
                "mirror reachable? apt-get update may help)",
            )
            unpacked = work / "nspawn"
            for deb in sorted(debs.glob("*.deb")):
                run(["dpkg", "-x", str(deb), str(unpacked)], timeout=60, what=f"dpkg -x {deb}")
            if not (unpacked / "usr/bin/systemd-nspawn").exists():
                raise Unavailable("the systemd-container package holds no usr/bin/systemd-nspawn")
            unpacked.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _nspawn_env(nspawn: Path) -> dict[str, str]:
    return {**CLEAN_ENV, "LD_LIBRARY_PATH": str(nspawn / "usr/lib/x86_64-linux-gnu/systemd")}


def _dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return sorted(project["dependencies"])


def rootfs_key() -> str:
    recipe = json.dumps([RECIPE, SUITE, PACKAGES, VENV, _dependencies()])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def build_wheels(out: Path, *, deps: bool) -> list[Path]:
    """This checkout's wheel (and, with ``deps``, every dependency's) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-build-isolation",
        "-q",
        str(REPO),
        "-w",
        str(out),
    ]
    if not deps:
        cmd.insert(4, "--no-deps")
    run(
        cmd,
        timeout=300,
        what="pip wheel (the gateway's wheel" + (" and its dependencies)" if deps else ")"),
    )
    return sorted(out.glob("*.whl"))


def _complete(rootfs: Path) -> bool:
    venv_python = rootfs / VENV.lstrip("/") / "bin/python"
    return (rootfs / "usr/lib/systemd/systemd").exists() and venv_python.exists()


def cached_rootfs() -> Path:
    """The cached root file system, built once per :func:`rootfs_key` (about a minute)."""
    target = CACHE / f"rootfs-{rootfs_key()}"
    if _complete(target):
        return target
    with _locked(CACHE / ".lock"):
        if _complete(target):
            return target
        _need("mmdebstrap", fix=" (apt-get install -y --no-install-recommends mmdebstrap)")
        for stale in CACHE.glob("rootfs-*"):  # older recipes and half-built ones
            run(["rm", "-rf", "--one-file-system", str(stale)], timeout=120, what=f"rm {stale}")
        building = CACHE / f"building-{rootfs_key()}"
        run(["rm", "-rf", "--one-file-system", str(building)], timeout=120, what="rm")
        try:
            run(
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    SUITE,
                    str(building),
                ],
                timeout=480,
                what=f"mmdebstrap {SUITE} (is the Debian mirror in this machine's apt sources "
                "reachable?)",
            )
            wheels = building / "root/wheels"
            for wheel in build_wheels(wheels, deps=True):
                if wheel.name.startswith("edge_gateway-"):
                    wheel.unlink()  # each run installs the checkout's own
            script = (
                f"python3 -m venv {VENV} && {VENV}/bin/pip install -q --no-index "
                f"--no-cache-dir /root/wheels/*.whl"
            )
            run(
                ["chroot", str(building), "sh", "-c", script],
                timeout=300,
                env=CLEAN_ENV,
                what="the venv with the gateway's dependencies in the root file system",
            )
            shutil.rmtree(wheels)
            building.rename(target)
        finally:
            if building.exists():
                run(["rm", "-rf", "--one-file-system", str(building)], timeout=120, what="rm")
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of every process whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found.append((int(entry.name), comm))
    return found


def _cgroup_dirs(name: str) -> list[Path]:
    roots = [r for r in CGROUP_ROOTS if r.is_dir()] or [Path("/sys/fs/cgroup")]
    return [root / name for root in roots]


def _remove_cgroups(name: str, deadline_s: float = 15) -> list[str]:
    """Remove the run's cgroups leaf-first, killing what is left in them; what could not go."""
    left: list[str] = []
    for top in _cgroup_dirs(name):
        if not top.exists():
            continue
        end = time.monotonic() + deadline_s
        while top.exists():
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    for pid in (d / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(OSError):
                    d.rmdir()
            if time.monotonic() > end:
                left.append(str(top))
                break
            if top.exists():
                time.sleep(0.2)
    return left


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(path) or point.startswith(prefix):
            found.append(point)
    return found


def _remove_run_dir(run_dir: Path) -> None:
    for point in sorted(_mounts_under(run_dir), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], timeout=30, check=False)
    if _mounts_under(run_dir):
        raise RuntimeError(f"mounts left under {run_dir}: {_mounts_under(run_dir)}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(run_dir)], timeout=120, check=True)


def remove_leftovers() -> None:
    """What an earlier run killed before its clean-up left: its cgroups and its directory."""
    for run_dir in Path("/var/tmp").glob(f"{RUN_PREFIX}*"):
        try:
            pid = int(run_dir.name[len(RUN_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if _pid_alive(pid):
            continue  # another run, still going
        _remove_cgroups(run_dir.name)
        _remove_run_dir(run_dir)


class Container:
    """One boot of the cached root file system (under an overlay); a context manager."""

    def __init__(self, rootfs: Path, nspawn: Path, *, lifetime_s: int = 900) -> None:
        self.source = rootfs
        self.nspawn = nspawn
        self.lifetime_s = lifetime_s
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-", dir="/var/tmp"))
        self.rootfs = self.run_dir / "rootfs"  # the overlay's mount point (in nspawn's namespace)
        self.upper = self.run_dir / "upper"
        self.inbox = self.run_dir / "inbox"
        self.console = self.run_dir / "console.log"
        self.name = self.run_dir.name
        self.launcher: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        self.boot_s: float | None = None

    # ---- life ------------------------------------------------------------------------------

    def __enter__(self) -> Container:
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def boot(self) -> None:
        work = self.run_dir / "work"
        marker = self.upper / MARKER.lstrip("/")
        for d in (self.rootfs, marker.parent, work, self.inbox):
            d.mkdir(parents=True, exist_ok=True)
        marker.write_text(self.name + "\n")
        cgroups = _cgroup_dirs(self.name)
        for d in cgroups:
            d.mkdir()
        # The shell joins the run's cgroups and, in its private mount namespace, mounts a tmpfs
        # on /run/systemd (nspawn refuses to clean up there on the root disk) and the root: the
        # cached one under an overlay whose upper directory takes every write of this run (the
        # cache stays as built; no copy). Then it becomes nspawn. Its mounts end with it.
        join = " && ".join(f"echo $$ > {d}/cgroup.procs" for d in cgroups)
        nspawn = self.nspawn / "usr/bin/systemd-nspawn"
        script = (
            f"{join} && mount -t tmpfs -o mode=755 edge-test /run/systemd && "
            f"mount -t overlay -o lowerdir={self.source},upperdir={self.upper},workdir={work} "
            f"edge-test-root {self.rootfs} && exec {nspawn} -D {self.rootfs} --boot "
            f"--bind-ro={self.inbox}:{INBOX} --private-network --register=no --keep-unit "
            "--console=read-only --quiet"
        )
        started = time.monotonic()
        with self.console.open("wb") as console:
            self.launcher = subprocess.Popen(
                [
                    "timeout",
                    "--kill-after=10",
                    str(self.lifetime_s),
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-c",
                    script,
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=_nspawn_env(self.nspawn),
                start_new_session=True,
            )
        self.pid1 = self._find_pid1(started + 30)
        # Until its manager is up, systemctl cannot connect ("Failed to connect to bus").
        end = time.monotonic() + 60
        while True:
            state = self.sh("systemctl is-system-running --wait", timeout=60, check=False)
            if state.stdout.strip() in ("running", "degraded"):
                break
            if time.monotonic() > end:
                raise Unavailable(
                    f"the container did not boot: {state.stdout.strip()!r} "
                    f"{state.stderr.strip()!r}\n{self.console_tail()}"
                )
            time.sleep(0.1)
        self.boot_s = time.monotonic() - started

    def _find_pid1(self, deadline: float) -> int:
        assert self.launcher is not None
        while time.monotonic() < deadline:
            if self.launcher.poll() is not None:
                raise Unavailable(
                    f"systemd-nspawn ended (exit {self.launcher.returncode}) before the "
                    f"container booted:\n{self.console_tail()}"
                )
            for nspawn_pid, comm in _children(self.launcher.pid):
                if comm == "systemd-nspawn":
                    for pid, child in _children(nspawn_pid):
                        if child == "systemd" and self._is_our_root(pid):
                            return pid
            time.sleep(0.1)
        raise Unavailable(f"no systemd in the container after 30 s:\n{self.console_tail()}")

    def _is_our_root(self, pid: int) -> bool:
        """Is ``pid``'s root directory this run's (never this machine's own root)?"""
        try:
            theirs = os.stat(f"/proc/{pid}/root")
            marker = Path(f"/proc/{pid}/root{MARKER}").read_text()
        except OSError:
            return False
        host = os.stat("/")
        if (theirs.st_dev, theirs.st_ino) == (host.st_dev, host.st_ino):
            return False
        return marker == self.name + "\n"

    def console_tail(self, lines: int = 30) -> str:
        try:
            return "console:\n" + tail(self.console.read_bytes(), lines)
        except OSError:
            return ""

    def close(self) -> None:
        """Power off (or kill), remove the cgroups and the run's directory; safe to call twice."""
        problems: list[str] = []
        launcher = self.launcher
        if launcher is not None and launcher.poll() is None:
            if self.pid1 is not None and self._is_our_root(self.pid1):
                with contextlib.suppress(Exception):
                    self.sh("systemctl poweroff", timeout=10, check=False)
            try:
                launcher.wait(30)
            except subprocess.TimeoutExpired:
                problems.append("the container did not power off within 30 s; killed")
                if self.pid1 is not None and self._is_our_root(self.pid1):
                    os.kill(self.pid1, signal.SIGKILL)  # ends its whole pid namespace
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait(15)
        self.pid1 = None
        problems += [f"cgroup left: {d}" for d in _remove_cgroups(self.name)]
        if self.run_dir.exists():
            _remove_run_dir(self.run_dir)
        if problems:
            print("container clean-up: " + "; ".join(problems), file=sys.stderr)

    # ---- commands --------------------------------------------------------------------------

    def sh(
        self, script: str, *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with ``sh`` as root in the container (all its namespaces)."""
        pid = self.pid1
        if pid is None or not self._is_our_root(pid):
            raise RuntimeError("the container is not running")
        guarded = f"[ -e {MARKER} ] || exit 97; {script}"
        try:
            done = subprocess.run(
                ["nsenter", "-t", str(pid), "-a", "-r", "-w", "sh", "-c", guarded],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=CLEAN_ENV,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"in the container, no result within {timeout} s: {script}\n{tail(exc.stderr)}"
            ) from exc
        if done.returncode == 97:
            raise RuntimeError(f"{MARKER} is missing: not the container's root")
        if check and done.returncode != 0:
            raise AssertionError(
                f"in the container, exit {done.returncode}: {script}\n"
                f"stdout: {tail(done.stdout)}\nstderr: {tail(done.stderr)}"
            )
        return done

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        args = " ".join(f"-p {p}" for p in props)
        out = self.sh(f"systemctl show {args} {unit}", timeout=20).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def put(self, name: str, data: bytes | str) -> str:
        """Hand the container a file: it sees it, read-only, at the path returned."""
        target = self.inbox / name
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(0o644)
        return f"{INBOX}/{name}"
