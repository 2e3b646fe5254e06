"""The local API fuzzed from its own OpenAPI document (schemathesis), against the real daemon.

The gateway runs in a thread of its own (its own event loop, the real uvicorn on a free
loopback port); schemathesis makes requests from the test thread, valid ones and invalid ones
(wrong types, missing and extra fields, out-of-range values, odd strings), and for a third of
the JSON bodies one field swapped for JSON that schemathesis does not write but a client can
(``1e309``, ``NaN``, a 5000-digit integer, an unpaired surrogate, deep nesting). For every request:
no 5xx, an answer within ``ANSWER_S``, an error body of the API's own form for every 4xx, and a
refused request (any 4xx) changes nothing: the journal, the events, the outbox and the work
center's projections read the same before and after it.

``/api/events`` is left out: an event stream does not end by design (tests/panel/test_api.py
reads it). The normal run is bounded by ``EXAMPLES`` per operation and mode; the slow one
(``-m slow``, ``./scripts/test --long``) makes ``SLOW_EXAMPLES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from edge.domain.inputs import Pulses
from tests.panel.conftest import PIN, panel_config, running_panel, spec

EXAMPLES = 6
SLOW_EXAMPLES = 150
ANSWER_S = 10.0
TOKEN_HEADER = "X-Supervisor-Token"
T = TypeVar("T")

# The tables a refused request must leave alone (projections, journal, events, outbox).
STATE_TABLES = ("work_center", "operation", "counter", "stop", "confirmation", "unassigned")


@dataclass
class Live:
    url: str
    db: Path
    token: str
    loop: asyncio.AbstractEventLoop

    def fingerprint(self) -> tuple[int, int, int, str]:
        """Journal, event and outbox counts and a digest of the projections, read beside it."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM journal), (SELECT count(*) FROM event), "
                "(SELECT count(*) FROM outbox)"
            ).fetchone()
            digest = hashlib.sha256()
            for table in STATE_TABLES:
                for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1"):
                    digest.update(repr(row).encode())
        return int(counts[0]), int(counts[1]), int(counts[2]), digest.hexdigest()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The gateway with its panel, in a thread; an order running with a partial confirmation."""
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = panel_config(tmp, env={"EDGE_PANEL__SUPERVISOR_SESSION_S": "3600"})
    loop = asyncio.new_event_loop()
    ready: Future[Live] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with running_panel(cfg) as panel:
                await panel.dispatch(spec("4711", "0020", 30, 10), spec("4712", "0010", 50, 20))
                async with httpx.AsyncClient(base_url=panel.url) as client:
                    r = await client.post(
                        "/api/commands/start-production",
                        json={"command_id": "fuzz-start-0001", "op": "4711/0020"},
                    )
                    assert r.status_code == 200, r.text
                    out = await panel.engine.submit(Pulses("press_good", 12, panel.engine.now()))
                    assert out.accepted
                    r = await client.post("/api/supervisor/login", json={"pin": PIN})
                    assert r.status_code == 200, r.text
                    token = r.json()["token"]
                # The first tick journals the shift; after it, only requests move the journal.
                deadline = time.monotonic() + 10
                while not await panel.rows("SELECT 1 FROM event WHERE type = 'shift_changed'"):
                    assert time.monotonic() < deadline, "no shift_changed event"
                    await asyncio.sleep(0.02)
                ready.set_result(Live(panel.url, cfg.store.path, token, loop))
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def run() -> None:
        asyncio.set_event_loop(loop)
        with contextlib.suppress(BaseException):
            loop.run_until_complete(serve())

    thread = threading.Thread(target=run, name="fuzz-gateway", daemon=True)
    thread.start()
    try:
        yield ready.result(60)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def _schema(live: Live) -> Any:
    doc = requests.get(f"{live.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    # An event stream never ends by design; logout would end the fuzz's own session.
    return schema.exclude(path="/api/events").exclude(path="/api/supervisor/logout")


def _headers(live: Live, path: str, draw: Callable[[st.SearchStrategy[T]], T]) -> dict[str, str]:
    """A live supervisor session for most supervisor requests, so they reach the core too."""
    supervisor = path.startswith("/api/supervisor/") and path != "/api/supervisor/login"
    return {TOKEN_HEADER: live.token} if supervisor and draw(st.integers(0, 3)) else {}


# JSON that schemathesis does not write but a client can: each must be refused, not crash.
HOSTILE = (
    "1e309",
    "-1e309",
    "NaN",
    "Infinity",
    "9" * 5000,
    "-9223372036854775809",
    '"\\ud800"',
    "[" * 5000 + "]" * 5000,
)


@dataclass
class Sent:
    status: int
    text: str
    content_type: str | None
    request: str


def _send(
    live: Live,
    case: Any,
    headers: dict[str, str],
    session: requests.Session,
    draw: Callable[[st.SearchStrategy[T]], T],
) -> Sent:
    """The generated request; for some JSON objects, one field swapped for a hostile value."""
    body = case.body
    if case.method == "POST" and isinstance(body, dict) and body and draw(st.integers(0, 2)) == 0:
        field = draw(st.sampled_from(sorted(body)))
        token = draw(st.sampled_from(HOSTILE))
        raw = json.dumps({**body, field: "\x00HOSTILE\x00"}).replace(
            '"\\u0000HOSTILE\\u0000"', token
        )
        r = session.post(
            live.url + case.formatted_path,
            data=raw.encode(),
            headers={"content-type": "application/json", **headers},
            timeout=ANSWER_S,
        )
        request = f"POST {case.formatted_path} {field}={token[:40]}"
        return Sent(r.status_code, r.text, r.headers.get("content-type"), request)
    response = case.call(base_url=live.url, headers=headers, session=session, timeout=ANSWER_S)
    content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
    return Sent(
        int(response.status_code),
        response.text,
        content_type[0] if content_type else None,
        f"{case.method} {case.formatted_path} body={case.body!r}"[:500],
    )


def _check(
    live: Live,
    case: Any,
    headers: dict[str, str],
    session: requests.Session,
    draw: Callable[[st.SearchStrategy[T]], T],
) -> int:
    before = live.fingerprint()
    started = time.monotonic()
    sent = _send(live, case, headers, session, draw)
    took = time.monotonic() - started
    request = sent.request
    assert took < ANSWER_S, f"{request}: {took:.1f} s"
    assert sent.status < 500, f"{request}: {sent.status} {sent.text[:500]}"
    if sent.status >= 400:
        assert sent.content_type == "application/json", (request, sent.content_type)
        body = json.loads(sent.text)
        assert body["ok"] is False, (request, body)
        assert isinstance(body["code"], str), (request, body)
        assert body["message"], (request, body)
        after = live.fingerprint()
        assert after == before, f"{request}: refused ({sent.status}), state changed"
    return sent.status


def _fuzz_one(
    live: Live,
    operation: Any,
    mode: GenerationMode,
    examples: int,
    session: requests.Session,
    statuses: Counter[int],
) -> int:
    made = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=examples <= EXAMPLES,  # the normal run is the same every time
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        nonlocal made
        made += 1
        headers = _headers(live, operation.path, data.draw)
        statuses[_check(live, case, headers, session, data.draw)] += 1

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid: an operation without parameters or a body.
        if mode is not GenerationMode.NEGATIVE or made:
            raise
    return made


def _fuzz(live: Live, examples: int) -> int:
    schema = _schema(live)
    session = requests.Session()
    statuses: Counter[int] = Counter()
    made = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20, [o.path for o in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            made += _fuzz_one(live, operation, mode, examples, session, statuses)
    print(f"schemathesis: answers by status {dict(sorted(statuses.items()))}")
    assert statuses[200] > 10, statuses  # requests that reached the core and were carried out
    assert statuses[422] > 10, statuses  # and refused ones
    return made


def test_fuzz_the_api_no_500_no_hang_no_change_when_refused(live: Live) -> None:
    started = time.monotonic()
    made = _fuzz(live, EXAMPLES)
    print(f"schemathesis: {made} requests in {time.monotonic() - started:.1f} s")
    assert made > 200


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fuzz_the_api_at_length(live: Live) -> None:
    started = time.monotonic()
    made = _fuzz(live, SLOW_EXAMPLES)
    print(f"schemathesis: {made} requests in {time.monotonic() - started:.1f} s")
