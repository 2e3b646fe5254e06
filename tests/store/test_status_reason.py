"""The reason of a hold survives a restart, and operations stored without one read the same."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from edge.domain.inputs import Action, DispatchList, Transition
from edge.domain.model import OperationKey, OperationStatus
from edge.engine import Engine
from edge.store.replay import verify_all
from edge.store.store import Store
from edge.sync import messages
from tests.engine.helpers import rules, spec

KEY = OperationKey("4711", "0020")


def docs(db: Path) -> dict[str, dict[str, object]]:
    with sqlite3.connect(db) as conn:
        return {k: json.loads(d) for k, d in conn.execute("SELECT key, doc FROM operation")}


async def test_the_reason_of_a_hold_survives_a_restart_and_verify_holds(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    engine = await Engine.open(Store(db), rules(), outbound=messages)
    now = engine.now
    await engine.apply_now(DispatchList(1, (spec(),), now()))
    await engine.apply_now(Transition(Action.START_PRODUCTION, str(KEY), "operator:1", now()))
    # an operation without a reason is stored as before the field existed: no key at all
    assert "status_reason" not in docs(db)[str(KEY)]
    out = await engine.apply_now(
        Transition(Action.HOLD, str(KEY), "central", now(), reason="quality hold: coil batch 88")
    )
    assert out.accepted, out.rejection
    assert docs(db)[str(KEY)]["status_reason"] == "quality hold: coil batch 88"
    await engine.close()

    engine = await Engine.open(Store(db), rules(), outbound=messages)
    op = engine.work_center.operations[KEY]
    assert (op.status, op.status_reason) == (OperationStatus.HELD, "quality hold: coil batch 88")
    checks = await engine.run_store(verify_all, engine.store)
    assert checks
    assert all(c.differences == [] for c in checks), checks
    await engine.apply_now(Transition(Action.RELEASE, str(KEY), "supervisor:2001", engine.now()))
    assert "status_reason" not in docs(db)[str(KEY)]
    await engine.close()
