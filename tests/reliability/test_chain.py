"""The whole chain under the faults plants see: machine -> gateway -> mosquitto -> two relays
-> SAP, each a process of its own (tests/reliability/chain.py). Each test works through a
seeded schedule of operations, injects its fault, and compares the three ledgers: what the
machine made, what the gateway confirmed, what SAP posted. The promise: no confirmation lost,
none posted twice, the daemons keep running, every failure visible with its reason; and the
machine's alarm stops are the gateway's stops (start and end within a second).

The short versions share one chain (one start of every process; each test its own orders and
list version); the long ones (``slow``) run a chain of their own with many more faults.
The relays share a PostgreSQL ledger (tests/pg.py).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.pg import PostgresCluster
from tests.relay.conftest import pg_cluster  # noqa: F401 - the session's PostgreSQL
from tests.relay.harness import pg_url
from tests.reliability.campaign import CampaignRecord
from tests.reliability.chain import (
    FINAL_VERDICTS,
    Chain,
    Op,
    Schedule,
    Stop,
    check,
    judge,
    until,
)
from tests.small_disk import small_disk

pytestmark = pytest.mark.timeout(240)


def ledger_url(cluster: PostgresCluster, name: str) -> str:
    if not cluster.running:
        cluster.start()
    return pg_url(cluster.create_database(name))


def fast_chain(workdir: Path, cluster: PostgresCluster, ledger: str) -> Chain:
    """A chain with no schedule of its own (each test dispatches its own), the relays' ledger
    in database ``ledger`` of ``cluster``, and short relay timeouts."""
    return Chain(
        workdir,
        Schedule(0, ()),
        ledger_url=ledger_url(cluster, ledger),
        relay_timeout_s=1.0,
        result_timeout_s=4.0,
    )


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
    pg_cluster: PostgresCluster,  # noqa: F811
) -> Iterator[Chain]:
    """One chain for the short tests; its own schedule is empty (each test dispatches its own)."""
    workdir = tmp_path_factory.mktemp("chain")
    with fast_chain(workdir, pg_cluster, "chain_short") as chain:
        yield chain
        # The daemons kept running through every fault, and stop cleanly on SIGTERM.
        assert chain.stop_daemons() == {"gateway": 0, "relay-a": 0, "relay-b": 0}


def run(chain: Chain, schedule: Schedule, fault: Any = None, **settle: Any) -> None:
    chain.dispatch(schedule)
    chain.produce(fault, schedule)
    chain.settle(schedule=schedule, **settle)


def checked(chain: Chain, schedule: Schedule, record: CampaignRecord | None) -> str:
    """:func:`check`, and what ``judge`` found added to ``record`` (the long runs' summary)
    before it is held to the promise, so that a failing run's record shows it too."""
    if record is not None:
        record.judged(schedule, judge(chain.ledgers(), schedule.ops))
    return check(chain, schedule)


# ----------------------------------------------------------------------- 1. gateway SIGKILL


class GatewayKills:
    """SIGKILL of the gateway ``kills`` times, spread over the operations, each a seeded
    number of parts (3-15) after the gateway came back (the machine goes on making parts while
    the gateway is away: the gap is counted at reconnect); restarted after a random pause of up
    to 0.6 s. Never during one of the machine's stops: the driver makes those between kills."""

    def __init__(self, schedule: Schedule, kills: int, rng: random.Random) -> None:
        self.rng = rng
        self.left = kills
        n = len(schedule.ops)
        self.quota = {
            op.ref: kills // n + (1 if i < kills % n else 0) for i, op in enumerate(schedule.ops)
        }
        self.carry = 0
        self.op: str | None = None
        self.due = 0
        self.done = 0

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        if op.ref != self.op:  # a new operation: what the last one did not use comes along
            if self.op is not None:
                self.carry += self.quota[self.op]
            self.op = op.ref
            self.quota[op.ref] += self.carry
            self.carry = 0
            self.due = made + self.rng.randint(3, 15)
        if self.quota[op.ref] <= 0 or made < self.due:
            return
        chain.kill_gateway()
        time.sleep(self.rng.uniform(0.0, 0.6))
        chain.start_gateway()
        self.quota[op.ref] -= 1
        self.done += 1
        self.due = chain_made(chain, op) + self.rng.randint(3, 15)

    def pending(self, op: Op) -> bool:
        return self.quota.get(op.ref, 0) > 0 and (op.ref == self.op or self.op is None)


def chain_made(chain: Chain, op: Op) -> int:
    """Parts made under ``op`` so far (what produce() compares with op.parts)."""
    assert chain.machine is not None
    made = chain.machine.made()
    return made["good"] + made["scrap"] - chain.op_base


def gateway_kills(
    chain: Chain, seed: int, n_ops: int, kills: int, record: CampaignRecord | None = None
) -> str:
    schedule = Schedule.make(seed, n_ops, (40, 60), (0, 1), first_order=seed * 10)
    fault = GatewayKills(schedule, kills, random.Random(seed))
    try:
        run(chain, schedule, fault, timeout=120)
    finally:
        if record is not None:
            record.fault("gateway", fault.done)
    assert fault.done == kills
    return checked(chain, schedule, record)


def test_gateway_killed_while_it_counts_and_confirms(shared: Chain) -> None:
    print(gateway_kills(shared, seed=101, n_ops=2, kills=3))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_gateway_killed_a_hundred_times(
    tmp_path: Path,
    pg_cluster: PostgresCluster,  # noqa: F811
    campaign_record: CampaignRecord,
) -> None:
    with fast_chain(tmp_path, pg_cluster, "chain_kills_long") as chain:
        print(gateway_kills(chain, seed=1001, n_ops=25, kills=100, record=campaign_record))


# ----------------------------------------------------------------------- 2. relay SIGKILL


def posting_owner(chain: Chain) -> str | None:
    """The relay holding a row in ``posting`` (its post is in the air), if any."""
    import psycopg

    with psycopg.connect(chain.ledger_url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT owner FROM relay_ledger WHERE status = 'posting' ORDER BY updated_ms LIMIT 1"
        ).fetchone()
    return None if row is None else str(row[0])


class RelayKills:
    """SIGKILL of the relay that holds a post in the air, ``kills`` times: alternately after
    SAP committed it (SAP holds its answer back, then sends a 504) and before (SAP slow to take
    it). The killed relay stays down until :meth:`restart`; the other one takes over."""

    def __init__(self, kills: int) -> None:
        self.kills = kills
        self.killed: list[str] = []
        self.armed = False

    def pending(self, op: Op) -> bool:
        return len(self.killed) < self.kills

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        sap = chain.sap
        assert sap is not None
        if len(self.killed) >= self.kills or made < 10:
            return
        committed_first = len(self.killed) % 2 == 0
        if not self.armed:
            if sum(1 for proc in chain.relays.values() if proc.poll() is None) < 2:
                self.restart(chain)
            if committed_first:
                sap.set("timeout_after_commit", n=1, delay_s=0.9)
            else:
                sap.set("latency", min_s=0.8)
            self.armed = True
            return
        stats = sap.stats()
        if (committed_first and stats["queued_after_commit"]) or stats["in_flight"] == 0:
            return  # the post that is held back has not come yet
        owner = posting_owner(chain)
        if owner is None:
            return
        chain.procs.kill(chain.relays[owner])
        self.killed.append(owner)
        sap.set("latency")
        self.armed = False

    def restart(self, chain: Chain) -> None:
        for name, proc in chain.relays.items():
            if proc.poll() is not None:
                chain.start_relay(name)


def relay_kills(
    chain: Chain, seed: int, n_ops: int, kills: int, record: CampaignRecord | None = None
) -> str:
    schedule = Schedule.make(seed, n_ops, (50, 70), (0, 1), first_order=seed * 10)
    fault = RelayKills(kills)
    chain.dispatch(schedule)
    try:
        chain.produce(fault, schedule)
    finally:
        if record is not None:
            record.fault("relay", len(fault.killed))
    assert len(fault.killed) == kills, f"only {len(fault.killed)} kills landed mid-post"
    chain.settle(schedule=schedule, timeout=120)  # the other relay alone
    fault.restart(chain)
    return checked(chain, schedule, record)


def test_a_relay_killed_mid_post_is_taken_over_by_the_other(shared: Chain) -> None:
    print(relay_kills(shared, seed=202, n_ops=2, kills=2))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_relays_killed_mid_post_many_times(
    tmp_path: Path,
    pg_cluster: PostgresCluster,  # noqa: F811
    campaign_record: CampaignRecord,
) -> None:
    with fast_chain(tmp_path, pg_cluster, "chain_relay_long") as chain:
        print(relay_kills(chain, seed=2002, n_ops=10, kills=20, record=campaign_record))


# One long campaign of both kills on one chain: rounds of a seeded schedule each, a relay killed
# mid-post (CAMPAIGN_RELAY_KILLS, alternately after and before SAP's commit) and then the
# gateway (CAMPAIGN_GATEWAY_KILLS over two operations), each round judged on its own (its seed
# names it), until CAMPAIGN_CYCLES kills in all. Bounded: CAMPAIGN_BUDGET_S of rounds, then it
# stops and fails with what it did (pytest's timeout above that is the backstop).
# EDGE_CHAIN_CYCLES runs a shorter campaign (a trial of the campaign itself).
CAMPAIGN_CYCLES = int(os.environ.get("EDGE_CHAIN_CYCLES", "1000"))
CAMPAIGN_GATEWAY_KILLS = 8
CAMPAIGN_RELAY_KILLS = 2
CAMPAIGN_BUDGET_S = 3 * 3600.0


@pytest.mark.slow
@pytest.mark.timeout(int(CAMPAIGN_BUDGET_S) + 1800)
def test_the_gateway_and_the_relays_killed_a_thousand_times(
    tmp_path: Path,
    pg_cluster: PostgresCluster,  # noqa: F811
    campaign_record: CampaignRecord,
) -> None:
    record = campaign_record
    began = time.monotonic()
    with fast_chain(tmp_path, pg_cluster, "chain_campaign_long") as chain:
        n = 0
        while record.cycles < CAMPAIGN_CYCLES:
            assert time.monotonic() - began < CAMPAIGN_BUDGET_S, (
                f"out of time after {n} rounds: {record.progress()}"
            )
            relay_kills(chain, seed=20_000 + n, n_ops=1, kills=CAMPAIGN_RELAY_KILLS, record=record)
            gateway_kills(
                chain, seed=10_000 + n, n_ops=2, kills=CAMPAIGN_GATEWAY_KILLS, record=record
            )
            n += 1
            print(f"round {n}: {record.progress()}", flush=True)
        # The daemons kept running through every kill, and stop cleanly on SIGTERM.
        assert chain.stop_daemons() == {"gateway": 0, "relay-a": 0, "relay-b": 0}
    assert record.lost == record.doubled == record.orphans == record.stops_missed == 0


# ----------------------------------------------------------------------- 3. the broker


class BrokerFaults:
    """One broker fault per operation, while the machine counts: stopped for a seeded 1-4 s
    and started again with its persistence (even operations), or killed and started with
    its persistence gone (odd ones: sessions, queued messages and retained state lost)."""

    def __init__(self, schedule: Schedule, rng: random.Random) -> None:
        self.refs = [op.ref for op in schedule.ops]
        self.rng = rng
        self.done: list[str] = []

    def pending(self, op: Op) -> bool:
        return self.refs.index(op.ref) >= len(self.done)

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        index = len(self.done)
        if made < 15 or self.refs.index(op.ref) != index:
            return
        if index % 2 == 0:
            chain.broker.stop()
            time.sleep(self.rng.uniform(1.0, 4.0))
            chain.broker.start()
            self.done.append("restarted")
        else:
            chain.broker.stop(kill=True)
            chain.broker.restart(wipe=True)
            self.done.append("persistence lost")


def broker_faults(chain: Chain, seed: int, n_ops: int, record: CampaignRecord | None = None) -> str:
    schedule = Schedule.make(seed, n_ops, (60, 80), (0, 1), first_order=seed * 10)
    fault = BrokerFaults(schedule, random.Random(seed))
    try:
        run(chain, schedule, fault, timeout=120)
    finally:
        if record is not None:
            record.fault("broker", len(fault.done))
    assert len(fault.done) == n_ops
    return checked(chain, schedule, record)


def test_the_broker_stopped_under_load_and_restarted_without_its_persistence(
    shared: Chain,
) -> None:
    print(broker_faults(shared, seed=303, n_ops=2))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_broker_stopped_and_wiped_many_times(
    tmp_path: Path,
    pg_cluster: PostgresCluster,  # noqa: F811
    campaign_record: CampaignRecord,
) -> None:
    with fast_chain(tmp_path, pg_cluster, "chain_broker_long") as chain:
        print(broker_faults(chain, seed=3003, n_ops=20, record=campaign_record))


# ----------------------------------------------------------------------- 4. the ERP


class ErpDownThenSlow:
    """In each operation: SAP down (every request 503) for ``down_s`` while the machine
    counts, then slow (every request 0.3-0.7 s, inside the relay's timeout) for ``slow_s``;
    with ``late``, then one posting committed 3 s late (after the relay gave up on it)."""

    def __init__(self, down_s: float, slow_s: float, late: bool = False) -> None:
        self.down_s = down_s
        self.slow_s = slow_s
        self.late = late
        self.op: str | None = None
        self.step = 0
        self.since = 0.0
        self.cycles = 0

    def pending(self, op: Op) -> bool:
        return op.ref != self.op or self.step < 3

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        sap = chain.sap
        assert sap is not None
        if op.ref != self.op:
            self.op, self.step = op.ref, 0
        now = time.monotonic()
        if self.step == 0 and made >= 5:
            sap.set("outage", on=True)
            self.step, self.since = 1, now
        elif self.step == 1 and now - self.since >= self.down_s:
            sap.set("outage", on=False)
            sap.set("latency", min_s=0.3, max_s=0.7)
            self.step, self.since = 2, now
        elif self.step == 2 and now - self.since >= self.slow_s:
            sap.set("latency")
            if self.late:
                sap.set("commit_late", n=1, delay_s=3.0)
            self.step = 3
            self.cycles += 1


def test_the_erp_down_then_slow(shared: Chain) -> None:
    schedule = Schedule.make(404, 2, (60, 80), (0, 1), first_order=4040)
    fault = ErpDownThenSlow(down_s=2.0, slow_s=1.5)
    run(shared, schedule, fault, timeout=120)
    assert fault.cycles == 2
    print(check(shared, schedule))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_erp_down_slow_and_late_many_times(
    tmp_path: Path,
    pg_cluster: PostgresCluster,  # noqa: F811
    campaign_record: CampaignRecord,
) -> None:
    schedule = Schedule.make(4004, 12, (150, 200), (0, 1), first_order=40040)
    with fast_chain(tmp_path, pg_cluster, "chain_erp_long") as chain:
        fault = ErpDownThenSlow(down_s=2.0, slow_s=1.5, late=True)
        try:
            run(chain, schedule, fault, timeout=300)
        finally:
            campaign_record.fault("ERP", fault.cycles)
        time.sleep(4.0)  # the last late commit has landed
        assert fault.cycles == len(schedule.ops)
        print(checked(chain, schedule, campaign_record))


REJECTION = "Order is blocked for confirmation by a planner"


def rejected(chain: Chain, schedule: Schedule) -> list[dict[str, Any]]:
    refs = {op.ref for op in schedule.ops}
    return [c for c in chain.confirmations() if c["op"] in refs and c["status"] == "rejected"]


def reject_next_post(chain: Chain) -> None:
    assert chain.sap is not None
    chain.sap.set("fail_next", n=1, status=400, code="RU/999", text=REJECTION, method="POST")


def resend_rejected(chain: Chain, schedule: Schedule) -> dict[str, Any]:
    """Wait for the one rejected confirmation; check SAP's text reached the gateway (what the
    panel shows); a supervisor resends it."""
    until(lambda: bool(rejected(chain, schedule)), 30, "the rejected confirmation at the gateway")
    (conf,) = rejected(chain, schedule)
    assert REJECTION in (conf["erp_message"] or ""), conf
    chain.supervisor_login()
    chain.command("/api/supervisor/resend", {"op": conf["op"], "counter": conf["counter"]})
    return conf


class RejectFinal:
    """SAP refuses the final confirmation: armed once every partial one is posted, just
    before the operator completes."""

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        pass

    def before_complete(self, chain: Chain, op: Op) -> None:
        def partials_posted() -> bool:
            mine = [c for c in chain.confirmations() if c["op"] == op.ref]
            return bool(mine) and all(c["status"] in FINAL_VERDICTS for c in mine)

        until(partials_posted, 30, f"the partial confirmations of {op.ref} posted")
        reject_next_post(chain)


def test_a_rejection_reaches_the_gateway_with_its_reason_and_its_resend_is_posted(
    shared: Chain,
) -> None:
    """SAP refuses the final confirmation with its own text; the text reaches the gateway's
    confirmation (what the panel shows); a supervisor resends it; it is posted once."""
    schedule = Schedule.make(606, 1, (60, 80), (0, 1), first_order=6060)
    run_until_rejected = RejectFinal()
    shared.dispatch(schedule)
    shared.produce(run_until_rejected, schedule)
    conf = resend_rejected(shared, schedule)
    assert conf["final"]
    shared.settle(schedule=schedule, timeout=60)
    print(check(shared, schedule))


def test_a_rejection_after_an_outage_with_the_final_confirmation_queued_behind_it(
    shared: Chain,
) -> None:
    """SAP is down while a whole operation runs and completes (its partial confirmations and
    the final one wait at the relay, in order); SAP comes back and rejects the first one. The
    gateway had sent the later ones before it knew; the relay posts them, the final one
    closing the operation in SAP, unless the relay holds them behind the rejected one (it
    does: they are answered ``retrying`` naming it, and go once its resend is posted)."""
    schedule = Schedule.make(707, 1, (60, 80), (0, 0), first_order=7070)
    assert shared.sap is not None
    shared.sap.set("outage", on=True)
    try:
        shared.dispatch(schedule)
        shared.produce(None, schedule)
        refs = {op.ref for op in schedule.ops}
        until(
            lambda: any(c["final"] for c in shared.confirmations() if c["op"] in refs),
            30,
            "the final confirmation at the gateway",
        )
        time.sleep(1.0)  # every one at the relay, retrying
        reject_next_post(shared)
    finally:
        shared.sap.set("outage", on=False)
    conf = resend_rejected(shared, schedule)

    def answered() -> bool:
        (now,) = [c for c in shared.confirmations() if c["conf_id"] == conf["conf_id"]]
        return now["status"] in FINAL_VERDICTS or (
            now["status"] == "rejected" and REJECTION not in (now["erp_message"] or "")
        )

    until(answered, 30, "SAP's verdict on the resend")
    shared.settle(45, schedule=schedule)  # the held ones go after it
    print(check(shared, schedule))


def test_the_erp_answering_after_the_relay_timed_out_posts_once(shared: Chain) -> None:
    """SAP takes one confirmation and commits it only after the relay gave up waiting
    (``commit_late``: 3 s against the relay's 1 s): the relay must find it in SAP before it
    posts again, and SAP must not end up with it twice."""
    # long enough that the late commit lands before the final confirmation closes the operation
    schedule = Schedule.make(505, 1, (140, 150), (0, 0), first_order=5050)
    sap = shared.sap
    assert sap is not None
    delay_s = 3.0
    armed: list[float] = []

    def late(chain: Chain, op: Op, made: int) -> None:
        if not armed and made >= 5:
            sap.set("commit_late", n=1, delay_s=delay_s)
            armed.append(time.monotonic())

    run(shared, schedule, late, timeout=120)
    assert sap.stats()["queued_late_commits"] == 0  # a post took it
    time.sleep(max(0.0, armed[0] + delay_s + 1.0 - time.monotonic()))  # it committed by now
    print(check(shared, schedule))


# ------------------------------------------------------------- OPC UA server restarts (PLC)


class PlcRestarts:
    """The machine's OPC UA server restarts (a PLC power cycle: its sessions and subscriptions
    gone, every counter back at 0, a new ServerStatus.StartTime) once in each operation, a
    seeded number of parts in, with the machine standing still; it makes parts again once the
    server is back. Standing still, because the parts a counter shows between the gateway's
    last notification and a reset nobody announced are gone with the counter: no gateway can
    know them (at 100 ms publishing, the parts of up to 100 ms)."""

    def __init__(self, schedule: Schedule, rng: random.Random) -> None:
        self.at = {op.ref: rng.randint(5, max(6, op.parts - 10)) for op in schedule.ops}
        self.done: list[str] = []

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        if op.ref in self.done or made < self.at[op.ref]:
            return
        machine = chain.machine
        assert machine is not None
        machine.cmd("idle")
        now = machine.made()
        want = now["good"] + now["scrap"] - chain.op_base

        def seen() -> bool:
            got = chain.get(f"/api/operations/{op.ref}")
            return Decimal(got["good"]) + Decimal(got["scrap"]) == want

        until(seen, 30, f"the gateway to count {want} on {op.ref} before the restart")
        machine.cmd("restart")
        machine.cmd("run")
        self.done.append(op.ref)


def test_the_plc_restarts_with_its_counters_reset(shared: Chain) -> None:
    """Counted by difference, a counter that went back to 0 would lose every part before it
    or count them twice: the gateway takes the new StartTime as a restart and counts from 0,
    so the machine's parts, the gateway's confirmations and SAP's postings agree."""
    schedule = Schedule.make(616, 2, (40, 60), (0, 0), first_order=6160)
    restarts = PlcRestarts(schedule, random.Random(616))
    run(shared, schedule, restarts, timeout=120)
    assert sorted(restarts.done) == sorted(op.ref for op in schedule.ops)
    assert shared.machine is not None
    assert shared.machine.cmd("values")["restarts"] >= 2
    print(check(shared, schedule))


# ------------------------------------------------------------------------- a full disk


class DiskFull:
    """The gateway's disk fills (below ``[retention] min_free_mb``) once, some parts into the
    first operation, while the machine goes on: machine counts are refused loudly
    (``disk_low`` in the health), the OPC UA source keeps the readings and hands them over
    again; space comes back after ``seconds`` and every part is counted once."""

    def __init__(self, disk: Path, at_part: int, seconds: float) -> None:
        self.disk, self.at_part, self.seconds = disk, at_part, seconds
        self.refused_seen = False
        self.done = False

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        if self.done or made < self.at_part:
            return
        self.done = True
        st = os.statvfs(self.disk)
        filler = self.disk / "filler"
        with filler.open("wb") as f:  # leave about 1 MB free: below the 4 MB floor
            left = st.f_bavail * st.f_frsize - 1_000_000
            while left > 0:
                f.write(b"\0" * min(left, 1 << 20))
                left -= 1 << 20
        until(lambda: bool(chain.get("/api/health")["disk_low"]), 15, "disk_low in the health")
        time.sleep(self.seconds)  # the machine makes parts the gateway cannot take now
        self.refused_seen = bool(chain.get("/api/health")["disk_low"])
        filler.unlink()
        until(lambda: not chain.get("/api/health")["disk_low"], 15, "the disk back")


def test_a_full_disk_refuses_counts_then_takes_them_all(tmp_path: Path) -> None:
    schedule = Schedule.make(626, 2, (50, 70), (0, 0), first_order=6260)
    disk = tmp_path / "disk"
    with (
        small_disk(disk, "32M"),
        Chain(tmp_path / "chain", schedule, db_dir=disk, min_free_mb=4) as chain,
    ):
        full = DiskFull(disk, at_part=15, seconds=1.5)
        run(chain, schedule, full, timeout=120)
        assert full.refused_seen
        assert "machine counts refused" in chain.gateway_log(200_000)
        print(check(chain, schedule))


# ------------------------------------------------------------------ counters that wrap


@pytest.mark.parametrize(("bits", "start"), [(16, 65_500), (32, 2**32 - 40)])
def test_counters_wrap_at_16_and_32_bits(tmp_path: Path, bits: int, start: int) -> None:
    """The machine's GoodCount starts just below the top of its range and wraps to 0 in the
    first operation (a UInt16 or UInt32 node, the gateway's source of the same bits): every
    part counted once across the wrap, in all three ledgers."""
    schedule = Schedule.make(636 + bits, 2, (45, 60), (0, 0), first_order=6360 + bits)
    with Chain(tmp_path / "chain", schedule, bits=bits, start_value=start) as chain:
        run(chain, schedule, timeout=120)
        assert chain.machine is not None
        good = chain.machine.cmd("values")["values"]["good"]
        assert good < start  # it wrapped
        assert "counter_wrapped" in chain.gateway_log(500_000)
        print(check(chain, schedule))


# ------------------------------------------- the machine stops while the gateway is down


class KilledBeforeAStop:
    """SIGKILL of the gateway a few parts before each of the machine's stops; it is started
    again at once and comes back while the machine stands (each stop lasts 4 s): the stop
    began while no gateway ran, so its start can only come from the machine (the state's
    SourceTimestamp), and the judge holds start and end to a second."""

    def __init__(self, schedule: Schedule) -> None:
        self.before = {op.ref: [st.at_part - 2 for st in op.stops] for op in schedule.ops}
        self.kills = 0

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        due = self.before[op.ref]
        if not due or made < due[0]:
            return
        due.pop(0)
        chain.kill_gateway()
        chain.start_gateway(wait=False)
        self.kills += 1


def test_a_stop_that_began_while_the_gateway_was_down_is_dated_by_the_machine(
    shared: Chain,
) -> None:
    ops = tuple(
        Op(order=str(6460 + i), operation="0010", parts=40, stops=(Stop(20, "E-217", 4.0),))
        for i in range(2)
    )
    schedule = Schedule(646, ops)
    fault = KilledBeforeAStop(schedule)
    run(shared, schedule, fault, timeout=120)
    shared.wait_gateway_up()
    assert fault.kills == 2
    print(check(shared, schedule))


# ----------------------------------------------------- the gateway's wall clock steps

HOUR_MS = 3_600_000
# About December 1970 today: a Pi without a real-time clock that booted before NTP answered.
BOOT_1970_MS = -1_767_000_000_000


class ClockSteps:
    """Steps of the gateway's wall clock (tests/reliability/stepped_gateway.py) at a part of an
    operation: ``steps`` maps (operation index, part) to the new offset in ms. What was
    stepped, and the gateway's ``edge_wall_clock_trusted`` just after, are kept."""

    def __init__(self, schedule: Schedule, steps: dict[tuple[int, int], int]) -> None:
        self.due = {(schedule.ops[i].ref, part): ms for (i, part), ms in steps.items()}
        self.done: list[tuple[str, int, int]] = []
        self.trusted: list[float | None] = []

    def __call__(self, chain: Chain, op: Op, made: int) -> None:
        offset = self.due.pop((op.ref, made), None)
        if offset is None:
            return
        chain.step_clock(offset)
        time.sleep(0.2)  # read within 20 ms; a tick and a scrape later
        self.done.append((op.ref, made, offset))
        self.trusted.append(chain.metric("edge_wall_clock_trusted"))


def stop_durations(chain: Chain, schedule: Schedule) -> list[tuple[str, float, float]]:
    """Each machine alarm stop of ``schedule`` beside the gateway's stop of the same alarm
    taken in order: (alarm, machine s, gateway s). The starts move with the gateway's wall
    clock; how long a stop lasted must not."""
    led = chain.ledgers()
    refs = {op.ref for op in schedule.ops}
    windows = [led.op_windows[r] for r in refs if r in led.op_windows]
    machine = sorted(
        m for m in led.machine_stops if m[2] and any(a <= m[0] <= b for a, b in windows)
    )
    gateway = sorted(
        (
            s
            for s in led.gateway_stops
            if s.get("alarm") and s.get("origin") == "machine_state" and set(s["operations"]) & refs
        ),
        key=lambda s: s["start"]["mono_ms"],
    )
    assert len(gateway) == len(machine) == sum(len(op.stops) for op in schedule.ops)
    out = []
    for (start, end, alarm), s in zip(machine, gateway, strict=True):
        assert s["alarm"] == alarm
        assert s.get("end") is not None, s
        gw = (s["end"]["wall_ms"] - s["start"]["wall_ms"]) / 1000
        out.append((alarm, (end - start) / 1000, gw))
    return out


def test_the_wall_clock_steps_an_hour_ahead_and_back_under_load(tmp_path: Path) -> None:
    """NTP steps the gateway's wall clock an hour ahead in the first operation and back in
    the third, while the machine makes parts and stops: every part confirmed once in SAP, and
    every stop as long as the machine's (its dates move with the clock, not its length)."""
    schedule = Schedule(
        650,
        tuple(
            Op(order=str(6500 + i), operation="0010", parts=50, stops=(Stop(30, "E-217", 1.0),))
            for i in range(4)
        ),
    )
    steps = ClockSteps(schedule, {(0, 20): HOUR_MS, (2, 20): 0})
    with Chain(tmp_path, schedule, wall_offset_ms=0) as chain:
        run(chain, schedule, steps, timeout=120)
        assert [d[2] for d in steps.done] == [HOUR_MS, 0]
        assert steps.trusted == [1.0, 1.0]  # an hour either way is a plausible time
        # judge's stop dates to an hour and a second; their lengths to a second below
        print(check(chain, schedule, stop_tolerance_ms=HOUR_MS + 1000))
        for alarm, machine_s, gateway_s in stop_durations(chain, schedule):
            assert abs(machine_s - gateway_s) <= 1.0, (alarm, machine_s, gateway_s)


def test_a_gateway_booted_in_1970_counts_until_ntp_sets_its_clock_and_posts_nothing_dated_1970(
    tmp_path: Path,
) -> None:
    """The gateway starts with its wall clock in 1970 (no real-time clock, NTP not yet there):
    /metrics says its event times are untrusted; it counts and confirms the first operation
    all the same. NTP sets the clock in the second operation: trusted from then on. The first
    operation's confirmations carry 1970 posting dates: the relay refuses them (posted, they
    would book costs and stock into 1970) with a text the supervisor sees, who resends each
    with today's date. Every part of the three operations is in SAP once, none dated before
    2025, and every stop is as long as the machine's."""
    schedule = Schedule(
        651,
        tuple(
            Op(order=str(6510 + i), operation="0010", parts=50, stops=(Stop(30, "E-105", 1.0),))
            for i in range(3)
        ),
    )
    steps = ClockSteps(schedule, {(1, 10): 0})
    with Chain(tmp_path, schedule, wall_offset_ms=BOOT_1970_MS) as chain:
        assert chain.metric("edge_wall_clock_trusted") == 0.0
        assert "the wall clock is not trusted" in chain.gateway_log(200_000)
        chain.dispatch(schedule)
        chain.produce(steps, schedule)
        assert steps.trusted == [1.0]
        assert "the wall clock is plausible now" in chain.gateway_log(500_000)
        refs = {op.ref for op in schedule.ops}
        today = time.strftime("%Y-%m-%d", time.gmtime())
        resent: list[str] = []

        def resend_what_the_relay_refused() -> bool:
            confs = [c for c in chain.confirmations() if c["op"] in refs]
            for c in confs:
                if c["status"] == "rejected" and c["conf_id"] not in resent:
                    assert "posting date 1970-" in (c["erp_message"] or ""), c
                    assert c["op"] == schedule.ops[0].ref, c
                    chain.supervisor_login()
                    chain.command(
                        "/api/supervisor/resend",
                        {"op": c["op"], "counter": c["counter"], "posting_date": today},
                    )
                    resent.append(c["conf_id"])
            finals = {c["op"] for c in confs if c["final"]}
            return refs <= finals and all(c["status"] in FINAL_VERDICTS for c in confs)

        until(resend_what_the_relay_refused, 120, "every confirmation posted", step=0.3)
        first = [c for c in chain.confirmations() if c["op"] == schedule.ops[0].ref]
        # Each confirmation made under the 1970 clock was refused once; the others went.
        assert resent, "no confirmation was dated 1970"
        assert len(set(resent)) == len(resent)
        assert {c["conf_id"] for c in first} >= set(resent)
        assert "RELAY/DATE" in chain.relay_log("relay-a", 500_000) + chain.relay_log(
            "relay-b", 500_000
        )
        dates = [int(p["entity"]["PostingDate"][6:-2]) for p in chain.ledgers().postings]
        assert min(dates) >= 1_735_689_600_000, dates  # 2025-01-01: nothing booked into 1970
        # The first operation's events are dated 1970: judge holds the stops' lengths.
        print(check(chain, schedule, stop_tolerance_ms=-BOOT_1970_MS + HOUR_MS))
        for alarm, machine_s, gateway_s in stop_durations(chain, schedule):
            assert abs(machine_s - gateway_s) <= 1.0, (alarm, machine_s, gateway_s)
