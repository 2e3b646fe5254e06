"""The routers without a daemon: each command row builds its input; only the hub sees the engine.

The engine here records what the routes submit and refuses it as stopped (a 503), so no work
center state is needed; what the core then does with an input is tested in test_api.py.
"""

from __future__ import annotations

import ast
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
from fastapi import FastAPI

from edge.domain.clock import Instant
from edge.domain.inputs import (
    AcknowledgeHelp,
    AcknowledgeOverDelivery,
    Action,
    AssignUnassigned,
    CallForHelp,
    CloseHelp,
    ComponentBatchLoaded,
    ComponentConsumed,
    CorrectCount,
    DeclareSetupGood,
    Input,
    ReportScrap,
    RequestConfirmation,
    RequestMaintenance,
    ResendConfirmation,
    ReverseConfirmation,
    ServiceDone,
    SetStopReason,
    Transition,
)
from edge.engine import Engine
from edge.errors import EngineStopped
from edge.panel import deps, routes
from edge.panel.api import create_app
from edge.panel.routes.commands import OPERATOR_COMMANDS
from edge.panel.routes.supervisor import SUPERVISOR_COMMANDS
from edge.panel.server import build_auth
from tests.panel.conftest import PIN, SUPERVISOR, panel_config

NOW = Instant(1_700_000_000_000, 5_000)
OP = "4711/0020"


class RecordingEngine:
    """What the hub asks of an engine for commands; every submission is refused as stopped."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Input, str | None]] = []
        # nobody logged in by badge: taps act as the panel's operator
        self.work_center = SimpleNamespace(header=SimpleNamespace(crew=()))

    def add_commit_hook(self, hook: Callable[..., None]) -> None:
        pass

    def add_listener(self, listener: Callable[..., None]) -> None:
        pass

    def now(self) -> Instant:
        return NOW

    async def submit(self, inp: Input, *, command_id: str | None = None) -> Any:
        self.submitted.append((inp, command_id))
        raise EngineStopped("stopped")


def transition(action: Action) -> Callable[[Any], bool]:
    return lambda inp: isinstance(inp, Transition) and inp.action is action and inp.op == OP


# path: (body without command_id, what the input must be)
COMMANDS: dict[str, tuple[dict[str, Any], Callable[[Any], bool]]] = {
    "/api/commands/start-setup": ({"op": OP}, transition(Action.START_SETUP)),
    "/api/commands/start-production": ({"op": OP}, transition(Action.START_PRODUCTION)),
    "/api/commands/interrupt": ({"op": OP}, transition(Action.INTERRUPT)),
    "/api/commands/resume": ({"op": OP}, transition(Action.RESUME)),
    "/api/commands/complete": (
        {"op": OP, "variance_reason": "V1"},
        lambda i: transition(Action.COMPLETE)(i) and i.variance_reason == "V1",
    ),
    "/api/commands/split": (
        {"op": OP, "quantity": 4},
        lambda i: transition(Action.SPLIT)(i) and i.quantity == Decimal(4),
    ),
    "/api/commands/scrap": (
        {"op": OP, "qty": 2, "reason": "S03", "rework": True},
        lambda i: (
            isinstance(i, ReportScrap)
            and (i.qty, i.reason, i.op, i.rework) == (Decimal(2), "S03", OP, True)
        ),
    ),
    "/api/commands/setup-good": (
        {"op": OP, "qty": 3},
        lambda i: isinstance(i, DeclareSetupGood) and (i.qty, i.op) == (Decimal(3), OP),
    ),
    "/api/commands/stop-reason": (
        {"reason": "R1", "stop_id": "st-1"},
        lambda i: isinstance(i, SetStopReason) and (i.reason, i.stop_id) == ("R1", "st-1"),
    ),
    "/api/commands/confirm": (
        {"op": OP},
        lambda i: isinstance(i, RequestConfirmation) and i.op == OP,
    ),
    "/api/commands/acknowledge-over-delivery": (
        {"op": OP},
        lambda i: isinstance(i, AcknowledgeOverDelivery) and i.op == OP,
    ),
    "/api/commands/call-help": (
        {"category": "material"},
        lambda i: isinstance(i, CallForHelp) and i.category == "material",
    ),
    "/api/commands/acknowledge-help": (
        {"call_id": "h-1"},
        lambda i: isinstance(i, AcknowledgeHelp) and i.call_id == "h-1",
    ),
    "/api/commands/close-help": (
        {"call_id": "h-1"},
        lambda i: isinstance(i, CloseHelp) and i.call_id == "h-1",
    ),
    "/api/commands/load-batch": (
        {"op": OP, "material": "STEEL-1", "batch": "B-100"},
        lambda i: (
            isinstance(i, ComponentBatchLoaded)
            and (i.op, i.material, i.batch, i.gtin) == (OP, "STEEL-1", "B-100", None)
        ),
    ),
    "/api/commands/consume": (
        {"op": OP, "material": "GLUE-7", "qty": "1.5", "batch": "G-1"},
        lambda i: (
            isinstance(i, ComponentConsumed)
            and (i.op, i.material, i.qty, i.batch) == (OP, "GLUE-7", Decimal("1.5"), "G-1")
        ),
    ),
    "/api/commands/request-maintenance": (
        {"stop_id": "S000001", "note": "Die stuck"},
        lambda i: (
            isinstance(i, RequestMaintenance) and (i.stop_id, i.note) == ("S000001", "Die stuck")
        ),
    ),
    "/api/supervisor/cancel": (
        {"op": OP, "reason": "Drawing changed"},
        lambda i: transition(Action.CANCEL)(i) and i.reason == "Drawing changed",
    ),
    "/api/supervisor/hold": (
        {"op": OP, "reason": "Quality hold: coil batch 88"},
        lambda i: transition(Action.HOLD)(i) and i.reason == "Quality hold: coil batch 88",
    ),
    "/api/supervisor/release": ({"op": OP}, transition(Action.RELEASE)),
    "/api/supervisor/reverse": (
        {"op": OP, "counter": 2},
        lambda i: isinstance(i, ReverseConfirmation) and (i.op, i.counter) == (OP, 2),
    ),
    "/api/supervisor/resend": (
        {"op": OP, "counter": 1, "posting_date": "2024-05-02", "variance_reason": "V2"},
        lambda i: (
            isinstance(i, ResendConfirmation)
            and (i.op, i.counter, i.posting_date, i.variance_reason) == (OP, 1, "2024-05-02", "V2")
        ),
    ),
    "/api/supervisor/reclassify-stop": (
        {"stop_id": "st-1", "reason": "R2"},
        lambda i: isinstance(i, SetStopReason) and (i.reason, i.stop_id) == ("R2", "st-1"),
    ),
    "/api/supervisor/assign-unassigned": (
        {"op": OP, "unassigned_id": "U000001"},
        lambda i: isinstance(i, AssignUnassigned) and (i.unassigned_id, i.op) == ("U000001", OP),
    ),
    "/api/supervisor/correct-count": (
        {"op": OP, "good_delta": -1, "scrap_delta": 1, "reason": "miscount", "scrap_reason": "S1"},
        lambda i: (
            isinstance(i, CorrectCount)
            and (i.op, i.good_delta, i.scrap_delta, i.reason, i.scrap_reason)
            == (OP, Decimal(-1), Decimal(1), "miscount", "S1")
        ),
    ),
    "/api/supervisor/service-done": (
        {"name": "die-check", "note": "Die reground"},
        lambda i: isinstance(i, ServiceDone) and (i.name, i.note) == ("die-check", "Die reground"),
    ),
}


def app_over(engine: RecordingEngine, tmp_path: Path) -> FastAPI:
    cfg = panel_config(tmp_path)
    return create_app(cast(Engine, engine), cfg, build_auth(cfg))


def test_every_command_route_comes_from_a_table_row(tmp_path: Path) -> None:
    doc = app_over(RecordingEngine(), tmp_path).openapi()
    rows = [*OPERATOR_COMMANDS, *SUPERVISOR_COMMANDS]
    assert {row.path for row in rows} == set(COMMANDS)
    posted = {p for p, item in doc["paths"].items() if "post" in item}
    assert {p for p in posted if p.startswith("/api/commands/")} == {
        row.path for row in OPERATOR_COMMANDS
    }
    for row in rows:
        operation = doc["paths"][row.path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{row.body.__name__}"}, row.path
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/CommandResult"}, row.path
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        if row in SUPERVISOR_COMMANDS:
            assert operation["tags"] == ["supervisor"]
            assert "401" in operation["responses"]
            assert headers == {deps.TOKEN_HEADER}
        else:
            assert operation["tags"] == ["operator"]
            assert "401" not in operation["responses"]
            assert not headers


async def test_each_row_builds_its_input_with_the_right_actor(tmp_path: Path) -> None:
    engine = RecordingEngine()
    transport = httpx.ASGITransport(app=app_over(engine, tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://panel") as client:
        login = await client.post("/api/supervisor/login", json={"pin": PIN})
        assert login.status_code == 200, login.text
        token = {deps.TOKEN_HEADER: login.json()["token"]}
        for path, (body, expected) in COMMANDS.items():
            supervisor = path.startswith("/api/supervisor/")
            for operator, actor in (
                (None, f"supervisor:{SUPERVISOR}" if supervisor else "operator:panel"),
                ("4242", f"supervisor:{SUPERVISOR}" if supervisor else "operator:4242"),
            ):
                command_id = str(uuid.uuid4())
                sent = {**body, "command_id": command_id}
                if operator:
                    sent["operator"] = operator
                r = await client.post(path, json=sent, headers=token if supervisor else {})
                assert r.status_code == 503, (path, r.text)
                assert r.json()["code"] == "unavailable"
                inp, submitted_id = engine.submitted.pop()
                assert submitted_id == command_id
                assert expected(inp), (path, inp)
                assert getattr(inp, "actor", None) == actor, path
                assert getattr(inp, "at", None) == NOW, path
            if supervisor:
                r = await client.post(path, json={**body, "command_id": str(uuid.uuid4())})
                assert r.status_code == 401, path
                assert r.json()["code"] == "supervisor_login_required"
        assert not engine.submitted


def test_only_the_hub_touches_the_engine() -> None:
    """Routes and dependencies reach the engine through PanelHub methods, never themselves."""
    files = [Path(deps.__file__), *Path(routes.__file__).parent.glob("*.py")]
    assert len(files) > 4
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr != "engine", f"{path.name}:{node.lineno}"
            if isinstance(node, ast.ImportFrom):
                assert node.module != "edge.engine", f"{path.name}:{node.lineno}"
            if isinstance(node, ast.Import):
                assert all(a.name != "edge.engine" for a in node.names), path.name
