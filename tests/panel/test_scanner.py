"""The barcode scanner in the daemon ([scanner]), end to end: a serial scanner on a pty, the
real engine, store and panel. The order card's code picks the operation (setup, then
production); a malformed GS1 code, a badge nobody holds and a component batch are refused
naming the code and why, change nothing, and the panel's state carries each result. A badge
in [[badges]] logs its holder in and out, and what the scanner and the panel do meanwhile is
theirs."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from edge.domain.model import OperationKey, OperationStatus
from tests.gateway.conftest import business_inputs
from tests.panel.conftest import panel_config, running_panel, spec, wait_until

KEY = OperationKey("4711", "0020")


@contextlib.asynccontextmanager
async def scanning_panel(
    tmp_path: Path, **env: str
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Callable[[bytes], None]]]:
    """The daemon with a serial scanner on a pty (scans end in CR) and operation 4711/0020
    dispatched: the panel, a client of it, and what scans a code."""
    master, slave = os.openpty()
    env = {
        "EDGE_SCANNER__ENABLED": "true",
        "EDGE_SCANNER__KIND": "serial",
        "EDGE_SCANNER__DEVICE": os.ttyname(slave),
        "EDGE_SCANNER__TERMINATOR": "cr",
        **env,
    }

    def scan(code: bytes) -> None:
        os.write(master, code + b"\r")

    try:
        async with (
            running_panel(panel_config(tmp_path, env=env)) as panel,
            httpx.AsyncClient(base_url=panel.url) as client,
        ):
            await panel.dispatch(spec("4711", "0020", 30, 10))
            yield panel, client, scan
    finally:
        os.close(master)
        os.close(slave)


async def scan_result(client: httpx.AsyncClient, seq: int) -> dict[str, object]:
    for _ in range(200):
        state = (await client.get("/api/state")).json()
        if state.get("scan") and state["scan"]["seq"] >= seq:
            return dict(state["scan"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no scan #{seq} on the panel")


async def test_a_serial_scanner_picks_the_operation_and_bad_scans_are_told(
    tmp_path: Path,
) -> None:
    async with scanning_panel(tmp_path) as (panel, client, scan):
        ops = panel.engine.wc.operations

        scan(b"OP4711/0020")  # the order card: setup starts
        first = await scan_result(client, 1)
        assert first["ok"] is True, first
        assert first["code"] == "OP4711/0020"
        assert "start setup" in str(first["message"])
        await wait_until(lambda: ops[KEY].status is OperationStatus.SETUP, what="setup")
        scan(b"OP4711/0020")  # again: production
        await scan_result(client, 2)
        await wait_until(lambda: ops[KEY].status is OperationStatus.RUNNING, what="running")
        journal = business_inputs(panel)
        scan(b"OP4711/0020")  # running: nothing more to do
        third = await scan_result(client, 3)
        assert third["ok"] is False
        assert third["message"] == "operation 4711/0020 is running"

        scan(b"]C10104012345678900")  # a GTIN with a wrong check digit
        bad = await scan_result(client, 4)
        assert bad["ok"] is False
        assert "check digit" in str(bad["message"]), bad
        scan(b"B123456")  # a badge nobody holds here
        badge = await scan_result(client, 5)
        assert badge["ok"] is False
        assert "badge '123456' belongs to no operator" in str(badge["message"]), badge
        scan(b"OP9999/0010")  # not dispatched here
        unknown = await scan_result(client, 6)
        assert unknown["message"] == "operation 9999/0010 is not in the dispatch list"
        after = business_inputs(panel)
        assert after == journal  # the refused scans stored nothing
        assert ops[KEY].status is OperationStatus.RUNNING


def actors(panel: object) -> list[tuple[str, str]]:
    """(input type, actor) of every journaled input that has an actor, oldest first."""
    rows = panel.engine.store.conn.execute(  # type: ignore[attr-defined]
        "SELECT input_type, json_extract(body, '$.actor') FROM journal ORDER BY id"
    ).fetchall()
    return [(t, a) for t, a in rows if a]


async def test_a_badge_logs_its_holder_in_and_what_they_do_is_theirs(tmp_path: Path) -> None:
    badges = '[{"badge": "123456", "personnel": "4711", "name": "Ana Weber"}]'
    async with scanning_panel(tmp_path, EDGE_BADGES=badges) as (panel, client, scan):
        crew = panel.engine.wc.header

        scan(b"B123456")
        login = await scan_result(client, 1)
        assert login == {**login, "ok": True, "message": "Ana Weber logged in"}
        assert [m.personnel for m in crew.crew] == ["4711"]
        scan(b"OP4711/0020")  # her scan: setup starts, as operator:4711
        await scan_result(client, 2)
        ops = panel.engine.wc.operations
        await wait_until(lambda: ops[KEY].status is OperationStatus.SETUP, what="setup")
        scan(b"B123456")  # again: logged out
        logout = await scan_result(client, 3)
        assert logout["message"] == "Ana Weber logged out"
        assert panel.engine.wc.header.crew == ()
        scan(b"OP4711/0020")  # nobody logged in: the panel's operator
        await scan_result(client, 4)
        await wait_until(lambda: ops[KEY].status is OperationStatus.RUNNING, what="running")
        transitions = [a for t, a in actors(panel) if t == "Transition"]
        assert transitions[-2:] == ["operator:4711", "operator:panel"], transitions
