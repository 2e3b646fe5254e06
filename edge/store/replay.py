"""Rebuild the state from the journal and compare it with the projections.

The journal is the record; the projections are a cache of it. ``verify`` proves the two agree,
which is what lets the gateway start from the projections (fast) and still trust them.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.domain.core import WorkCenter
from edge.domain.inputs import RulesApplied
from edge.errors import StoreError
from edge.store import codec, retention
from edge.store.retention import Checkpoint
from edge.store.schema import RETIRING_TABLES
from edge.store.store import Store, retired_rows

# (table, key) -> (doc, wall ms it left) of the rows a replay saw leave memory
Retired = dict[tuple[str, str], tuple[str, int]]


def replay(
    store: Store,
    wc: WorkCenter | None = None,
    after_id: int = 0,
    upto_id: int | None = None,
    retired: Retired | None = None,
) -> tuple[WorkCenter | None, int]:
    """Apply the journal's inputs in order through the core: from the start, or continuing a
    replayed ``wc`` after journal entry ``after_id`` (up to ``upto_id``). Returns the state
    and the last entry id; the rows that left memory on the way go into ``retired``."""
    last_id = after_id
    for journal_id, inp in store.iter_journal(after_id, upto_id):
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
        if wc.retired:
            for table, key, doc, at_ms in retired_rows(wc):
                if retired is not None:
                    retired[(table, key)] = (doc, at_ms)
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


def compare(stored: dict[str, dict[str, str]], wc: WorkCenter | None) -> list[Difference]:
    """Every row of ``stored`` (projection docs) that differs from what ``wc`` implies."""
    replayed = codec.all_docs(wc) if wc is not None else {}
    diffs: list[Difference] = []
    for table in sorted(set(stored) | set(replayed)):
        a, b = stored.get(table, {}), replayed.get(table, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(Difference(table, key, a.get(key), b.get(key)))
    return diffs


def verify(store: Store, replayed_wc: WorkCenter | None = None) -> list[Difference]:
    """Every projection row that differs from the journal replay (empty: they agree).

    The replay starts at the journal's start, or where retention cut the journal, at the
    oldest checkpoint the journal after which is complete."""
    with store.read_snapshot():
        wc: WorkCenter | None = replayed_wc
        if wc is None:
            start = _replay_start(store)
            wc = _restore(store, start) if start is not None else None
            wc = replay(store, wc, start.journal_id if start is not None else 0)[0]
        stored = store.projection_docs()
    return compare(stored, wc)


def compare_retired(store: Store, retired: Retired) -> list[Difference]:
    """Every row a replay saw leave memory that is stored otherwise (another doc, or another
    time it left). A row no longer there was deleted by its retention (finished_days)."""
    diffs: list[Difference] = []
    for table in RETIRING_TABLES:
        keys = sorted(k for t, k in retired if t == table)
        stored = store.retired_docs(table, keys)
        live = store.projection_docs()[table] if len(stored) < len(keys) else {}
        for key in keys:
            doc, at_ms = retired[(table, key)]
            if key in stored:
                if stored[key] != (doc, at_ms):
                    diffs.append(Difference(table, key, stored[key][0], doc))
            elif key in live:  # still marked as in memory: it never left
                diffs.append(Difference(table, key, live[key], doc))
    return diffs


@dataclass(frozen=True, slots=True)
class Check:
    """One comparison ``edge verify`` made, and what differed."""

    what: str
    differences: list[Difference]


def verify_all(store: Store) -> list[Check]:
    """Every check the journal and the checkpoints allow, in one read snapshot:

    - from the journal's start (while it is complete) or from the oldest checkpoint the
      journal after which is complete, replayed on: each later checkpoint equals the replay
      up to its journal entry, and the projections equal the whole replay;
    - the newest checkpoint plus the journal after it replay to the projections (what a
      start from that checkpoint would give).
    """
    checks: list[Check] = []
    with store.read_snapshot():
        stored = store.projection_docs()
        points = retention.checkpoints(store)
        start = _replay_start(store)
        wc = _restore(store, start) if start is not None else None
        at = start.journal_id if start is not None else 0
        origin = "the journal" if start is None else f"checkpoint {start.id} (entry {at})"
        retired: Retired = {}
        for cp in points:
            if cp.journal_id < at or (start is not None and cp.id == start.id):
                continue
            wc, at = replay(store, wc, at, cp.journal_id, retired=retired)
            checks.append(
                Check(
                    f"checkpoint {cp.id} (entry {cp.journal_id}) = replay from {origin}",
                    compare(retention.checkpoint_docs(store, cp.id), wc),
                )
            )
        wc, at = replay(store, wc, at, retired=retired)
        checks.append(Check(f"projections = replay from {origin}", compare(stored, wc)))
        if retired:
            checks.append(
                Check(
                    f"rows that left memory = replay from {origin}",
                    compare_retired(store, retired),
                )
            )
        newest = points[-1] if points else None
        if newest is not None and (start is None or newest.id != start.id):
            wc = replay(store, _restore(store, newest), newest.journal_id)[0]
            checks.append(
                Check(
                    f"projections = checkpoint {newest.id} (entry {newest.journal_id}) "
                    "+ the journal after it",
                    compare(stored, wc),
                )
            )
    return checks


def _replay_start(store: Store) -> Checkpoint | None:
    """None while the journal is complete from entry 1; else the oldest checkpoint the
    journal after which is complete (StoreError if there is none)."""
    whole_from = retention.journal_whole_from(store)
    if whole_from <= 1:
        return None
    for cp in retention.checkpoints(store):
        if cp.journal_id >= whole_from - 1:
            return cp
    raise StoreError(
        "the journal is incomplete and no checkpoint covers the entries that are missing"
    )


def _restore(store: Store, cp: Checkpoint) -> WorkCenter | None:
    try:
        return codec.restore(retention.checkpoint_docs(store, cp.id))
    except ValueError as exc:
        raise StoreError(f"checkpoint {cp.id} cannot be restored: {exc}") from exc
