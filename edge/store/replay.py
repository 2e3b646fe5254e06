"""Rebuild the state from the journal and compare it with the projections.

The journal is the record; the projections are a cache of it. ``verify`` proves the two agree,
which is what lets the gateway start from the projections (fast) and still trust them.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.domain.core import WorkCenter
from edge.domain.inputs import RulesApplied
from edge.errors import StoreError
from edge.store import codec
from edge.store.store import Store


def replay(
    store: Store, wc: WorkCenter | None = None, after_id: int = 0
) -> tuple[WorkCenter | None, int]:
    """Apply the journal's inputs in order through the core: from the start, or continuing a
    replayed ``wc`` after journal entry ``after_id``. Returns the state and the last entry id."""
    last_id = after_id
    for journal_id, inp in store.iter_journal(after_id):
        if wc is None:
            if not isinstance(inp, RulesApplied):
                raise StoreError(f"journal entry {journal_id} comes before the rules were applied")
            wc = WorkCenter(inp.rules)
        outcome = wc.apply(inp)
        if outcome.rejection is not None:
            raise StoreError(
                f"journal entry {journal_id} ({type(inp).__name__}) is rejected on replay: "
                f"{outcome.rejection.message}"
            )
        last_id = journal_id
    if wc is not None:
        wc.take_dirty()
    return wc, last_id


@dataclass(frozen=True, slots=True)
class Difference:
    table: str
    key: str
    stored: str | None
    replayed: str | None


def verify(store: Store, replayed_wc: WorkCenter | None = None) -> list[Difference]:
    """Every projection row that differs from the journal replay (empty: they agree)."""
    with store.read_snapshot():
        wc = replayed_wc if replayed_wc is not None else replay(store)[0]
        stored = store.projection_docs()
    replayed = codec.all_docs(wc) if wc is not None else {}
    diffs: list[Difference] = []
    for table in sorted(set(stored) | set(replayed)):
        a, b = stored.get(table, {}), replayed.get(table, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(Difference(table, key, a.get(key), b.get(key)))
    return diffs
