"""A node-opcua server (tests/opcua/nodeopcua/server.js) in its own process, for the tests.

node-opcua is installed with npm once into tests/opcua/.nodeopcua/ (git-ignored; the version is
pinned in tests/opcua/nodeopcua/package.json), the way bench/e2e.py installs Node-RED
(bench/npm.py). :func:`installed` says why it cannot be, for a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from bench.npm import Installed, Unavailable, npm_install
from simulators.opcua_machine import free_port

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nodeopcua"
INSTALL_DIR = HERE / ".nodeopcua"  # git-ignored
SCRIPT = TEMPLATE / "server.js"
VENDOR_URI = "urn:other-vendor:registered-first"
OUR_URI = "urn:edge-gateway:tests:nodeopcua-press"
START_TIMEOUT_S = 60.0

_install: Installed | Unavailable | None = None


def installed() -> Installed:
    """node-opcua in INSTALL_DIR (npm, once per machine; cached across runs)."""
    global _install
    if _install is None:
        try:
            _install = npm_install(
                INSTALL_DIR,
                (TEMPLATE / "package.json").read_text(),
                ("node-opcua",),
                what="node-opcua",
                min_node=18,
                timeout=300,
            )
        except Unavailable as exc:
            _install = exc
    if isinstance(_install, Unavailable):
        raise _install
    return _install


def nid(identifier: str) -> str:
    """One of our nodes as an ``nsu=`` id (stable whatever index the server gave us)."""
    return f"nsu={OUR_URI};s=Press.{identifier}"


class NodeOpcUaServer:
    """``async with NodeOpcUaServer(pki, secure=...) as server``; the port stays the same
    across :meth:`restart` (the process starts again: counters at 0, a new StartTime)."""

    def __init__(
        self,
        pki: Path,
        *,
        secure: bool = False,
        good: int = 0,
        sign_only: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        self.install = installed()
        self.pki = pki
        self.secure = secure
        self.sign_only = sign_only  # Basic256Sha256 Sign instead of SignAndEncrypt
        self.users = users or {}  # only these users get a session (none: anonymous)
        self.port = free_port()
        self.good_at_start = good
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self._stderr: asyncio.Task[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    @property
    def namespaces(self) -> list[str]:
        return list(self.info["namespaces"])

    @property
    def trusted(self) -> Path:
        return Path(self.info["trusted"])

    @property
    def rejected(self) -> Path:
        return Path(self.info["rejected"])

    async def __aenter__(self) -> NodeOpcUaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, good: int | None = None) -> None:
        """Start the process; ``good``: GoodCount at start (default: the constructor's)."""
        if good is not None:
            self.good_at_start = good
        self.pki.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NODE_PATH": str(self.install.module(""))}
        if self.users:
            env["NODEOPCUA_USERS"] = ",".join(f"{u}:{p}" for u, p in self.users.items())
        self.proc = await asyncio.create_subprocess_exec(
            str(self.install.node),
            str(SCRIPT),
            str(self.port),
            ("sign" if self.sign_only else "encrypt") if self.secure else "none",
            str(self.pki),
            str(self.good_at_start),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stderr is not None
        self._stderr = asyncio.create_task(self.proc.stderr.read())
        try:
            self.info = await asyncio.wait_for(self._answer(), START_TIMEOUT_S)
        except BaseException:
            await self.stop()
            raise
        if not self.info.get("ready"):
            await self.stop()
            raise RuntimeError(f"the node-opcua server did not start: {self.info}")
        self.values = {"GoodCount": self.good_at_start, "AbstractCount": 0}

    async def _answer(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                err = b""
                if self._stderr is not None:
                    with contextlib.suppress(Exception):
                        err = await asyncio.wait_for(self._stderr, 5)
                raise RuntimeError(f"the node-opcua server ended: {err.decode()[-2000:]}")
            text = line.decode().strip()
            if text.startswith("{"):
                answer: dict[str, Any] = json.loads(text)
                return answer

    async def command(self, line: str) -> Any:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(self._answer(), 10)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        self.values[answer["ok"]] = answer["value"]
        return answer["value"]

    async def add(self, name: str, n: int) -> int:
        value: int = await self.command(f"add {name} {n}")
        return value

    async def set(self, name: str, value: object) -> Any:
        return await self.command(f"set {name} {value}")

    async def restart(self) -> None:
        """A power cycle: the process ends and starts again, its counters at 0."""
        await self.stop()
        await self.start(good=0)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._stderr is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr, 5)
            self._stderr = None
