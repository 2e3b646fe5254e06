"""A private PostgreSQL cluster on a free loopback port, for the tests.

``PostgresCluster`` runs ``initdb`` into a fresh temporary directory and starts the server there
with ``pg_ctl``; ``dsn()`` names a database on it, ``create_database()`` makes one, and ``stop``,
``start``, ``restart`` and ``crash`` let a test take the server away under a client (the port
stays the same). Used as a context manager it starts on entry and is removed on exit.

The binaries come from the Debian ``postgresql`` package (``scripts/test`` installs it): the
highest version under ``/usr/lib/postgresql/*/bin`` first, else ``initdb``/``pg_ctl`` on PATH.
:class:`PostgresNotFound` when there are none (the fixtures turn it into a skip).

The server refuses to run as root, and the tests run as root in CI: then ``initdb`` and
``pg_ctl`` run as an unprivileged user (``postgres`` if it exists, else ``nobody``) and the
cluster directory is a fresh ``mkdtemp()`` owned by that user, under a base directory whose every
parent that user can traverse (pytest's own ``/tmp/pytest-of-root`` is mode 0700, so it is never
used). The cluster is for tests only: trust authentication, ``fsync=off`` (committed data
survives :meth:`PostgresCluster.crash`, not a crash of the machine).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
NEEDED = ("initdb", "pg_ctl", "postgres")
SUPERUSER = "postgres"
# User names tried, in order, for running the server when we are root.
UNPRIVILEGED = ("postgres", "nobody")

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresNotFound(FileNotFoundError):
    """No PostgreSQL server binaries on this machine."""


class PostgresClusterError(RuntimeError):
    """initdb or pg_ctl failed; the message carries their output and the server log's tail."""


def _version_key(path: Path) -> tuple[int, ...]:
    version = path.parent.name  # /usr/lib/postgresql/15/bin -> "15"
    return tuple(int(p) for p in version.split(".") if p.isdigit()) or (0,)


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres (the highest Debian version first)."""
    debian = sorted(
        (p for p in Path("/").glob(DEBIAN_GLOB.lstrip("/")) if p.is_dir()),
        key=_version_key,
        reverse=True,
    )
    for bindir in debian:
        if all(os.access(bindir / name, os.X_OK) for name in NEEDED):
            return bindir
    found = shutil.which("pg_ctl")
    if found:
        bindir = Path(os.path.realpath(found)).parent
        if all(os.access(bindir / name, os.X_OK) for name in NEEDED):
            return bindir
    raise PostgresNotFound(
        "PostgreSQL is not installed (no initdb/pg_ctl/postgres under "
        f"{DEBIAN_GLOB} or on PATH): run ./scripts/test as root once, or "
        "`sudo apt-get install --no-install-recommends postgresql`"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run_as() -> pwd.struct_passwd | None:
    """The user to run the server as: None for ourselves, an unprivileged one when root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            if entry.pw_uid != 0:
                return entry
    raise PostgresClusterError(
        f"running as root and none of the users {', '.join(UNPRIVILEGED)} exists: PostgreSQL "
        "refuses to run as root"
    )


def _traversable_by_others(path: Path) -> bool:
    """Every directory from / down to ``path`` lets any user pass through (o+x)."""
    path = path.resolve()
    for part in (path, *path.parents):
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _base_dir(as_user: pwd.struct_passwd | None) -> str | None:
    """Where to make the cluster directory (None: tempfile's default)."""
    if as_user is None:
        return None
    candidates = [tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]
    for base in candidates:
        if os.path.isdir(base) and _traversable_by_others(Path(base)):
            return base
    raise PostgresClusterError(
        f"no temporary directory that the user the server runs as can reach: tried {candidates}"
    )


class PostgresCluster:
    """One PostgreSQL server in a directory of its own, on 127.0.0.1 and a free port."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        port: int | None = None,
        bin_dir: Path | None = None,
        settings: Mapping[str, str | int] | None = None,
    ) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.port = port or free_port()
        self.user = SUPERUSER  # the database superuser initdb makes (trust, no password)
        self._as = _run_as()
        self._settings: dict[str, str | int] = {
            "listen_addresses": self.host,
            # fsync off: a commit still reaches the WAL (the OS's cache), so what was committed
            # survives crash() - a server crash - just not a machine crash. synchronous_commit
            # stays on: off, a crash would lose the last commits, and tests crash the server.
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": 60,
            "deadlock_timeout": "200ms",
            "max_wal_size": "256MB",
            "log_min_messages": "warning",
            "log_connections": "off",
            "dynamic_shared_memory_type": "posix",
        }
        self._settings.update(settings or {})
        self.root: Path | None = None
        self._initialised = False
        self._running = False
        self._atexit_registered = False

    # -- paths -------------------------------------------------------------------------------

    def _dir(self) -> Path:
        if self.root is None:
            raise PostgresClusterError("the cluster has not been created (call start())")
        return self.root

    @property
    def data_dir(self) -> Path:
        return self._dir() / "data"

    @property
    def log_file(self) -> Path:
        return self._dir() / "server.log"

    @property
    def running(self) -> bool:
        return self._running

    # -- connection strings ------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", **params: str | int) -> str:
        """A libpq conninfo string for ``dbname`` on this server (TCP on 127.0.0.1)."""
        parts: dict[str, str | int] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname,
            "connect_timeout": 5,
        }
        parts.update(params)
        return " ".join(f"{k}={_quote(str(v))}" for k, v in parts.items())

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    # -- databases ---------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Make an empty database ``name`` (lower-case identifier); its DSN."""
        self._check_name(name)
        self._admin(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever is still on it."""
        self._check_name(name)
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"not a plain lower-case database name: {name!r}")

    def _admin(self, sql: str) -> None:
        import psycopg  # the tests' dependency; only needed when a test makes databases

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.encode())

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (initialising the cluster the first time); returns once it accepts
        connections."""
        if self._running:
            return
        if not self._initialised:
            self._init()
        self._pg_ctl(
            "start",
            "-w",
            "-t",
            str(int(timeout)),
            "-l",
            str(self.log_file),
            timeout=timeout + 10,
        )
        self._running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect the clients, ``immediate``: as a crash)."""
        if not self._running:
            return
        self._pg_ctl("stop", "-w", "-t", "30", "-m", mode, timeout=40)
        self._running = False

    def crash(self) -> None:
        """Take the server down the way a crash does (no shutdown checkpoint)."""
        self.stop(mode="immediate")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        try:
            if self._running:
                try:
                    self.stop()
                except PostgresClusterError:
                    with contextlib.suppress(PostgresClusterError):
                        self.stop(mode="immediate")
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
            self._initialised = False
            self._running = False

    # -- internals ---------------------------------------------------------------------------

    def _init(self) -> None:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="edge-pg-", dir=_base_dir(self._as)))
            if self._as is not None:
                os.chown(self.root, self._as.pw_uid, self._as.pw_gid)
            os.chmod(self.root, 0o700)
        if not self._atexit_registered:
            atexit.register(self.destroy)  # a test run that ends without the fixture's teardown
            self._atexit_registered = True
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=60,
        )
        settings = {
            **self._settings,
            "port": self.port,
            "unix_socket_directories": str(self._dir()),
        }
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/pg.py\n")
            for key, value in settings.items():
                conf.write(f"{key} = {_conf_value(value)}\n")
        self._initialised = True

    def _pg_ctl(self, *args: str, timeout: float) -> None:
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args], timeout)

    def _run(self, cmd: list[str], timeout: float) -> None:
        kwargs: dict[str, Any] = {}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C",
            "LC_ALL": "C",
            "TZ": "UTC",
        }
        if self._as is not None:
            kwargs = {"user": self._as.pw_uid, "group": self._as.pw_gid, "extra_groups": []}
            env["HOME"] = str(self._dir())
            env["USER"] = env["LOGNAME"] = self._as.pw_name
        started = time.monotonic()
        try:
            result = subprocess.run(
                cmd,
                cwd=self._dir(),
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresClusterError(
                f"{Path(cmd[0]).name} did not finish in {timeout:.0f} s\n{self._log_tail()}"
            ) from exc
        if result.returncode != 0:
            raise PostgresClusterError(
                f"{' '.join(cmd)} failed (exit {result.returncode}, "
                f"{time.monotonic() - started:.1f} s):\n{result.stdout}{result.stderr}"
                f"{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except (OSError, PostgresClusterError):
            return ""
        return "server log:\n" + "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"PostgresCluster({self.host}:{self.port}, {state}, {self.root})"


def _quote(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conf_value(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


@contextlib.contextmanager
def running_cluster(**kwargs: Any) -> Iterator[PostgresCluster]:
    """``with running_cluster() as pg:`` - a started cluster, removed afterwards."""
    with PostgresCluster(**kwargs) as cluster:
        yield cluster
