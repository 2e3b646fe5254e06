"""A new database where one existed before makes new idempotency keys (rules.md §6).

After ``edge run --new-database`` a re-dispatched operation's confirmation #1 would otherwise
carry the key of the #1 the ERP posted from the lost database: the relay would answer
``duplicate`` and the new quantities would never be posted.
"""

from __future__ import annotations

from pathlib import Path

from edge.domain.confirmations import confirmation_idem_key
from edge.domain.inputs import Action, DispatchList, Pulses, Transition
from edge.domain.model import OperationKey
from edge.engine import Engine
from edge.store.store import Store
from edge.sync import messages
from tests.engine.helpers import rules, spec


async def first_key(db: Path, *, new_database: bool = False) -> tuple[str, int]:
    store = Store(db, new_database=new_database)
    engine = await Engine.open(store, rules(), outbound=messages)
    try:
        now = engine.now
        await engine.apply_now(DispatchList(1, (spec(),), now()))
        op = str(spec().key)
        await engine.apply_now(Transition(Action.START_PRODUCTION, op, "operator:1", now()))
        await engine.apply_now(Pulses("pulses", 3, now()))
        await engine.apply_now(Transition(Action.COMPLETE, op, "operator:1", now()))
        (conf,) = engine.wc.confirmations.values()
        return conf.idem_key, engine.wc.rules.key_epoch
    finally:
        await engine.close()


def lose(db: Path) -> None:
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)


async def test_each_new_database_after_a_lost_one_has_keys_of_its_own(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    key0, epoch0 = await first_key(db)
    key = OperationKey(spec().order, spec().operation)
    assert epoch0 == 0
    assert key0 == confirmation_idem_key(rules().edge_id, key, 1)  # the first keeps its keys
    lose(db)
    key1, epoch1 = await first_key(db, new_database=True)
    lose(db)
    key2, epoch2 = await first_key(db, new_database=True)
    assert (epoch1, epoch2) == (1, 2)
    assert len({key0, key1, key2}) == 3
    # A restart on the same database keeps its generation.
    store = Store(db)
    engine = await Engine.open(store, rules(), outbound=messages)
    try:
        assert engine.wc.rules.key_epoch == 2
        (conf,) = engine.wc.confirmations.values()
        assert conf.idem_key == key2
    finally:
        await engine.close()
