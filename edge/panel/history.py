"""A confirmation's history, read from the stored events and the outbox: never a write.

The core keeps only where a confirmation stands now (posted, rejected, waiting); the events
the engine committed keep how it got there (created, sent to the relay, rejected with the ERP's
text, resent by a supervisor, posted). The panel reads them over its own read-only connection
to the database (``mode=ro`` and ``query_only``), on a worker thread, so it never becomes a
second writer and never waits on the engine's store thread. What retention deleted is gone
from here too: the history starts with the oldest event kept.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from edge.panel import models as m

MAX_ENTRIES: Final = 100
_TYPES: Final = (
    "confirmation_created",
    "confirmation_resent",
    "confirmation_result",
    "confirmation_reversed",
    "confirmation_verdict_conflict",
)
_QUERY: Final = f"""
    SELECT e.type, e.at_wall_ms, e.actor, e.data,
           (SELECT o.state FROM outbox o WHERE o.event_id = e.id ORDER BY o.seq LIMIT 1)
      FROM event e
     WHERE e.op = ? AND e.type IN ({", ".join("?" * len(_TYPES))})
       AND json_extract(e.data, '$.conf_id') = ?
     ORDER BY e.id
     LIMIT {MAX_ENTRIES}
"""


# Per operation, through the event table's index on op: the table holds months of events.
_CHANGES: Final = """
    SELECT op, at_wall_ms, data FROM event
     WHERE op = ? AND type = 'operation_changed' AND json_extract(data, '$.active')
     ORDER BY id DESC LIMIT 1
"""


def change_notice(op: str, at_wall_ms: int, data: object) -> m.ChangeNotice | None:
    """The notice of an ``operation_changed`` event's data (None if it is not one)."""
    changes = data.get("changes") if isinstance(data, dict) else None
    if not isinstance(changes, dict) or not changes:
        return None
    return m.ChangeNotice(
        notice_id=f"{op}@{at_wall_ms}",
        op=op,
        at_wall_ms=at_wall_ms,
        changes={str(k): list(v)[:2] for k, v in changes.items() if isinstance(v, list)},
    )


class ConfirmationHistory:
    """Reads the events of one confirmation from the database at ``db_path``."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def read(self, op: str, conf_id: str) -> list[m.HistoryEntry]:
        """Oldest first; blocking (call it on a worker thread)."""
        uri = self.db_path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=2.0)
        try:
            conn.execute("PRAGMA query_only = 1")
            rows = conn.execute(_QUERY, (op, *_TYPES, conf_id)).fetchall()
        finally:
            conn.close()
        return [_entry(*row) for row in rows]

    def latest_changes(self, ops: Iterable[str]) -> dict[str, m.ChangeNotice]:
        """The latest change central made to each of ``ops`` while it was active."""
        uri = self.db_path.resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=2.0)
        try:
            conn.execute("PRAGMA query_only = 1")
            rows = [row for op in ops for row in conn.execute(_CHANGES, (op,)).fetchall()]
        finally:
            conn.close()
        out: dict[str, m.ChangeNotice] = {}
        for op, at_wall_ms, data in rows:
            notice = change_notice(op, at_wall_ms, json.loads(data))
            if notice is not None and op not in out:
                out[op] = notice
        return out


def _entry(
    kind: str, at_wall_ms: int, actor: str | None, data_text: str, outbox: str | None
) -> m.HistoryEntry:
    data = json.loads(data_text)
    return m.HistoryEntry(
        type=kind.removeprefix("confirmation_"),
        at_wall_ms=at_wall_ms,
        actor=actor,
        status=_text(data.get("status") or data.get("verdict")),
        reversal=bool(data.get("reversal")) or kind == "confirmation_reversed",
        message=_text(data.get("message")),
        erp_ref=_text(data.get("erp_ref")),
        idem_key=_text(data.get("idem_key")),
        sent=outbox,
    )


def _text(value: object) -> str | None:
    return str(value)[:1000] if value is not None else None
