"""Hostile input to the local API: each is a 4xx with the API's error body, and changes nothing.

The class: numbers JSON can write but Python cannot keep (1e309, NaN, Infinity, integers of
thousands of digits), JSON nested thousands deep, bodies that are not UTF-8 or carry an
unpaired surrogate, bodies that are not JSON at all or say another content type, and header
and path values with bytes the API does not expect.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.panel.conftest import Panel, panel_config, running_panel, spec

OP = "4711/0020"
SCRAP = "/api/commands/scrap"
JSON = {"content-type": "application/json"}


def scrap(qty: bytes) -> bytes:
    return (
        b'{"command_id": "hostile-0001", "op": "4711/0020", "qty": ' + qty + b', "reason": "S03"}'
    )


# (name, path, body, headers, status, field, message start)
CASES: list[tuple[str, str, bytes, dict[str, str], int, str | None, str]] = [
    ("1e309", SCRAP, scrap(b"1e309"), JSON, 422, "qty", "qty = '1e309': not a finite number"),
    ("-1e309", SCRAP, scrap(b"-1e309"), JSON, 422, "qty", "qty = '-1e309': not a finite"),
    ("1e999999999", SCRAP, scrap(b"1e999999999"), JSON, 422, "qty", "qty = '1e999999999'"),
    ("NaN", SCRAP, scrap(b"NaN"), JSON, 422, "qty", "qty = 'NaN': must be a finite number"),
    ("Infinity", SCRAP, scrap(b"Infinity"), JSON, 422, "qty", "qty = 'Infinity': must be"),
    ("-Infinity", SCRAP, scrap(b"-Infinity"), JSON, 422, "qty", "qty = '-Infinity': must be"),
    ("huge int", SCRAP, scrap(b"9" * 5000), JSON, 422, "qty", "qty = '999"),
    ("int over 64 bits", SCRAP, scrap(b"9223372036854775808"), JSON, 422, "qty", "qty = '92"),
    (
        "huge int in a nested field",
        "/api/supervisor/reverse",
        b'{"command_id": "hostile-0001", "op": "4711/0020", "counter": {"a": ['
        + b"1" * 5000
        + b"]}}",
        JSON,
        422,
        "counter.a.0",
        "counter.a.0 = '111",
    ),
    ("string Infinity", SCRAP, scrap(b'"Infinity"'), JSON, 422, "qty", "qty = 'Infinity': must"),
    ("string sNaN", SCRAP, scrap(b'"sNaN"'), JSON, 422, "qty", "qty = 'sNaN': must be a finite"),
    (
        "nested lists",
        SCRAP,
        b'{"command_id": "hostile-0001", "op": ' + b"[" * 20000 + b"]" * 20000 + b"}",
        JSON,
        422,
        None,
        "the request is nested too deeply",
    ),
    ("nested objects", SCRAP, b'{"a": ' * 5000 + b"1" + b"}" * 5000, JSON, 422, None, "the req"),
    ("nested 40 deep", SCRAP, b"[" * 40 + b"]" * 40, JSON, 422, None, "the request is nested"),
    (
        "not UTF-8",
        SCRAP,
        b'{"command_id": "hostile-0001", "op": "4711/\xff\xfe", "qty": 1, "reason": "S03"}',
        JSON,
        422,
        None,
        "the request body is not UTF-8 text",
    ),
    (
        "UTF-16",
        SCRAP,
        '{"command_id": "hostile-0001", "op": "4711/0020", "qty": 1}'.encode("utf-16"),
        JSON,
        422,
        None,
        "the request body is not UTF-8 text",
    ),
    (
        "unpaired surrogate",
        SCRAP,
        b'{"command_id": "hostile-0001", "op": "4711/\\ud800", "qty": 1, "reason": "S03"}',
        JSON,
        422,
        "op",
        "op = '4711/\\\\ud800': not valid text",
    ),
    (
        "unpaired surrogate in the PIN",
        "/api/supervisor/login",
        b'{"pin": "\\udfff1234"}',
        JSON,
        422,
        "pin",
        "pin = ",
    ),
    (
        "surrogate in a key",
        SCRAP,
        b'{"\\ud800": 1, "command_id": "hostile-0001", "op": "4711/0020", "qty": 1}',
        JSON,
        422,
        "\\ud800",
        "",
    ),
    ("not JSON", SCRAP, b"{no json", JSON, 422, None, "the request is not valid JSON"),
    ("text/plain", SCRAP, scrap(b"1"), {"content-type": "text/plain"}, 415, "content-type", "the"),
    ("no content type", SCRAP, scrap(b"1"), {}, 415, "content-type", "the body must be JSON"),
    (
        "form",
        SCRAP,
        b"qty=1&op=4711/0020",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "content-type",
        "the body must be JSON",
    ),
    (
        "latin-1 charset",
        SCRAP,
        scrap(b"1"),
        {"content-type": "application/json; charset=latin-1"},
        415,
        "content-type",
        "the body must be JSON in UTF-8",
    ),
    ("empty body", SCRAP, b"", JSON, 422, None, "the request needs a JSON body"),
    ("a list", SCRAP, b"[1, 2]", JSON, 422, None, "Input should be a valid dictionary"),
    (
        "unpaired surrogate in a batch",
        "/api/commands/load-batch",
        b'{"command_id": "hostile-0001", "op": "4711/0020", "material": "M", "batch": "\\udc00"}',
        JSON,
        422,
        "batch",
        "batch = ",
    ),
    (
        "1e309 consumed",
        "/api/commands/consume",
        b'{"command_id": "hostile-0001", "op": "4711/0020", "material": "M", "qty": 1e309}',
        JSON,
        422,
        "qty",
        "qty = '1e309': not a finite number",
    ),
    (
        "unpaired surrogate in a maintenance note",
        "/api/commands/request-maintenance",
        b'{"command_id": "hostile-0001", "note": "oil \\udc00 leak"}',
        JSON,
        422,
        "note",
        "note = ",
    ),
    (
        "a stop id of 5000 characters",
        "/api/commands/request-maintenance",
        b'{"command_id": "hostile-0001", "stop_id": "' + b"x" * 5000 + b'"}',
        JSON,
        422,
        "stop_id",
        "stop_id = 'xxx",
    ),
]


async def settled(panel: Panel) -> None:
    """Wait for the first tick's shift event and for the counts the historian's interval held
    back to go out (with a tick of their own), so that the journal then only moves by
    request."""
    for _ in range(500):
        shift = await panel.rows("SELECT 1 FROM event WHERE type = 'shift_changed'")
        if shift and not panel.engine.held_counts and panel.engine.busy_since is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no shift_changed event, or counts still held")


async def _journal(panel: Panel) -> tuple[int, int, int]:
    (row,) = await panel.rows(
        "SELECT (SELECT count(*) FROM journal), (SELECT count(*) FROM event), "
        "(SELECT count(*) FROM outbox)"
    )
    return (int(row[0]), int(row[1]), int(row[2]))


async def test_every_hostile_body_is_a_4xx_that_names_the_problem(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        await panel.dispatch(spec("4711", "0020", 30, 10))
        r = await client.post(
            "/api/commands/start-production", json={"command_id": "hostile-start", "op": OP}
        )
        assert r.status_code == 200, r.text
        await panel.pulses(5)
        await settled(panel)
        before = await _journal(panel)
        good = panel.engine.wc.operations[next(iter(panel.engine.wc.operations))].counted
        for name, path, body, headers, status, field, message in CASES:
            r = await client.post(path, content=body, headers=headers)
            assert r.status_code == status, (name, r.text)
            assert r.headers["content-type"] == "application/json", name
            error = r.json()
            assert error["ok"] is False, name
            assert error["field"] == field, (name, error)
            assert error["message"].startswith(message), (name, error)
            assert len(error["message"]) < 300, (name, error)
        assert await _journal(panel) == before
        assert panel.engine.wc.operations[next(iter(panel.engine.wc.operations))].counted == good
        # and the API still works
        r = await client.post(SCRAP, content=scrap(b"1"), headers=JSON)
        assert r.status_code == 200, r.text


async def test_unknown_paths_methods_and_odd_headers_get_the_error_body(tmp_path: Path) -> None:
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        r = await client.get("/api/nope")
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
        assert r.json()["message"] == "no such path: /api/nope"
        r = await client.get(SCRAP)
        assert (r.status_code, r.json()["code"]) == (405, "method_not_allowed")
        assert r.json()["message"] == f"GET is not allowed on {SCRAP}"
        r = await client.get("/api/operations/4711/0020", params={"split": "9" * 5000})
        assert r.status_code == 422
        assert r.json()["field"] == "query.split"
        assert len(r.json()["message"]) < 300
        r = await client.get("/api/operations/4711/0020", params={"split": "1e309"})
        assert (r.status_code, r.json()["field"]) == (422, "query.split")

        # A session token with bytes beyond ASCII (headers are Latin-1): a 401, not a crash.
        port = panel.cfg.panel.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /api/supervisor/session HTTP/1.1\r\nHost: x\r\n"
            b"X-Supervisor-Token: \xff\xfe\xe4\r\nConnection: close\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert b'"supervisor_login_required"' in answer


@pytest.mark.parametrize("value", ["1e309", "NaN", "-Infinity", "1" * 400])
async def test_non_finite_numbers_in_every_decimal_field(tmp_path: Path, value: str) -> None:
    """The quantity fields of every command: 422 naming the field, never a 500."""
    bodies = {
        SCRAP: ("qty", '"op": "4711/0020", "reason": "S03"'),
        "/api/commands/split": ("quantity", '"op": "4711/0020"'),
        "/api/supervisor/correct-count": ("good_delta", '"op": "4711/0020", "reason": "x"'),
        "/api/commands/consume": ("qty", '"op": "4711/0020", "material": "M"'),
    }
    async with (
        running_panel(panel_config(tmp_path)) as panel,
        httpx.AsyncClient(base_url=panel.url) as client,
    ):
        for path, (field, rest) in bodies.items():
            body = f'{{"command_id": "hostile-0002", {rest}, "{field}": {value}}}'
            r = await client.post(path, content=body.encode(), headers=JSON)
            assert r.status_code == 422, (path, r.text)
            assert r.json()["field"] == field, (path, r.text)
