"""``edge check`` only reads: run before the first start (often as root), it makes no database,
no ``-wal`` or ``-shm``, no OPC UA certificate and no rejected server certificate, and it says
what the first ``edge run`` will make."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge.store.schema import MIGRATIONS
from edge.store.store import Store
from simulators.opcua_machine import MachineSimulator
from tests.cli.test_cli import edge

CONFIG = """
[gateway]
edge_id = "wc-press-07"
work_center = "PRESS07"

[store]
path = "{state}/edge.db"

[[counting.sources]]
name = "press_good"
kind = "good"

[[sources.opcua]]
name = "press"
endpoint = "{endpoint}"
template = "machinery"
timeout_s = 3
security_policy = "Basic256Sha256"
security_mode = "Sign"
certificate_dir = "{state}/pki"
state_node = "{state_node}"

[[sources.opcua.counters]]
counter = "press_good"
node = "{good}"
"""


async def edge_async(*args: str) -> subprocess.CompletedProcess[str]:
    """``edge`` in a child process while this test's event loop serves the OPC UA server."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def db_config(tmp_path: Path, db: Path) -> Path:
    config = tmp_path / "edge.toml"
    config.write_text(f'[gateway]\nedge_id = "wc-1"\nwork_center = "WC1"\n[store]\npath = "{db}"\n')
    return config


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def lines(out: str) -> dict[str, str]:
    """'ok    database  detail' -> {'database': 'ok    database  detail'}."""
    found: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith(("ok  ", "FAIL")):
            name = line[6:].split("  ", 1)[0].strip()
            found[name] = line
    return found


async def test_check_on_an_empty_state_directory_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    async with MachineSimulator(cycle_s=0.05, security="sign", seed=5) as machine:
        assert machine.cert_path is not None
        config = tmp_path / "edge.toml"
        config.write_text(
            CONFIG.format(
                state=state,
                endpoint=machine.endpoint,
                state_node=machine.node_ids["state"],
                good=machine.node_ids["good"],
            )
        )
        result = await edge_async("check", "-c", str(config))
        assert files(state) == [], result.stdout
        out = lines(result.stdout)
        assert "no database yet" in out["database"]
        assert out["database"].startswith("ok")
        assert "made at the first edge run" in out["database"]
        cert = out["opcua press certificate"]
        assert cert.startswith("ok"), cert
        assert "none yet" in cert, cert
        assert f"{state}/pki/own/cert.der is made at the first edge run" in cert
        assert "edge certs" in cert
        # the server's certificate is not trusted yet: named, with where it must go
        refused = out["opcua press"]
        assert refused.startswith("FAIL"), result.stdout
        assert f"put the server's certificate into {state}/pki/trusted/" in refused
        assert "edge-check-" not in result.stdout  # the temporary directory is never named
        assert result.returncode == 1
        assert result.stdout.splitlines()[-1] == f"{len(out) - 1} of {len(out)} checks passed"

        # Trusted by the installer: the check connects with a temporary certificate, finds
        # the nodes, and still makes nothing.
        (state / "pki" / "trusted").mkdir(parents=True)
        shutil.copy(machine.cert_path, state / "pki" / "trusted" / "press.der")
        result = await edge_async("check", "-c", str(config))
        assert result.returncode == 0, result.stdout
        out = lines(result.stdout)
        assert "connected (Basic256Sha256/Sign)" in out["opcua press"]
        assert out["opcua press counter"].startswith("ok")
        assert files(state) == ["pki", "pki/trusted", "pki/trusted/press.der"]
        assert result.stdout.splitlines()[-1] == f"{len(out)} of {len(out)} checks passed"


def test_check_reads_an_existing_database_without_leaving_files(tmp_path: Path) -> None:
    """SQLite's read-only mode leaves -wal and -shm behind (as root: files the service user
    cannot open); the check reads the stopped gateway's database without them."""
    state = tmp_path / "state"
    db = state / "edge.db"
    store = Store(db)
    store.open()
    store.close()
    before = files(state)
    config = db_config(tmp_path, db)
    result = edge("check", "-c", str(config))
    assert files(state) == before == ["edge.db", "edge.db.identity"]
    assert result.returncode == 0, result.stdout
    assert f"{db} usable (schema version {len(MIGRATIONS)})" in lines(result.stdout)["database"]


def test_a_lost_database_is_named_as_edge_run_would(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    store = Store(db)
    store.open()
    store.close()
    db.unlink()
    config = db_config(tmp_path, db)
    result = edge("check", "-c", str(config))
    assert result.returncode == 1
    line = lines(result.stdout)["database"]
    assert line.startswith("FAIL")
    assert f"{db} is missing" in line
    assert "edge run --new-database" in line
    assert not db.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="judging files for another user needs root")
def test_files_the_service_user_cannot_open_are_named_with_the_fix(tmp_path: Path) -> None:
    """Run as root, the check judges the files for the service user: a database made by root
    (as an earlier check did) is named with the chown that fixes it."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    db = state / "edge.db"
    sqlite3.connect(db).close()  # root's, 0644
    config = db_config(tmp_path, db)
    result = edge("check", "-c", str(config), "--service-user", "nobody")
    assert result.returncode == 1
    line = lines(result.stdout)["database"]
    assert "the service user nobody cannot use" in line, line
    assert f"{state} (owner root, mode 0755)" in line
    assert f"chown -R nobody: {state}" in line
    result = edge("check", "-c", str(config), "--service-user", "no-such-user")
    assert result.returncode == 1
    assert "no user 'no-such-user'" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="making files for another user needs root")
def test_certs_as_root_makes_the_files_for_the_service_user(tmp_path: Path) -> None:
    """The certificate edge certs makes as root is the service user's (it must read the key),
    as is every folder it made; a second run makes nothing."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    state = tmp_path / "state"
    config = tmp_path / "edge.toml"
    config.write_text(
        CONFIG.format(
            state=state, endpoint="opc.tcp://127.0.0.1:4840", state_node="i=1", good="i=2"
        )
    )
    result = edge("certs", "-c", str(config), "--service-user", "nobody")
    assert result.returncode == 0, result.stderr
    assert "made for the service user nobody" in result.stdout
    made = [state, *(state / "pki").rglob("*"), state / "pki"]
    assert {p.relative_to(state).as_posix() for p in made if p != state} >= {
        "pki/own/cert.der",
        "pki/own/key.pem",
        "pki/trusted",
        "pki/rejected",
    }
    for path in made:
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), path
    assert (state / "pki" / "own" / "key.pem").stat().st_mode & 0o777 == 0o600
    again = edge("certs", "-c", str(config), "--service-user", "nobody")
    assert again.returncode == 0
    assert "made for" not in again.stdout
    assert edge("certs", "-c", str(config), "--service-user", "no-such-user").returncode == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="making files for another user needs root")
def test_browse_as_root_makes_the_certificate_for_the_service_user(tmp_path: Path) -> None:
    """edge browse with security makes the gateway's certificate in --certificate-dir when
    there is none (the gateway's own, as certificate_dir): as root it is the service user's."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    pki = tmp_path / "state" / "pki"
    result = edge(
        "browse", "opc.tcp://127.0.0.1:9", "--timeout", "1",
        "--security-policy", "Basic256Sha256", "--security-mode", "Sign",
        "--certificate-dir", str(pki), "--service-user", "nobody",
    )  # fmt: skip
    assert result.returncode == 1  # nothing listens there
    assert (pki / "own" / "key.pem").exists()
    for path in [tmp_path / "state", *(tmp_path / "state").rglob("*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), path


def test_a_log_without_its_shm_is_read_from_a_copy(tmp_path: Path) -> None:
    """A -wal left without its -shm (a copy of a crashed gateway's files): SQLite would make
    the -shm; the check reads the pair from a temporary copy, committed rows included."""
    from edge.check import read_only

    source, state = tmp_path / "source", tmp_path / "state"
    source.mkdir()
    state.mkdir()
    writer = sqlite3.connect(source / "edge.db")
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("INSERT INTO t VALUES (42)")
    writer.commit()
    for name in ("edge.db", "edge.db-wal"):  # while the writer holds them: the log is full
        shutil.copyfile(source / name, state / name)
    writer.close()
    with read_only(state / "edge.db") as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    assert files(state) == ["edge.db", "edge.db-wal"]
