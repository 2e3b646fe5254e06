"""``edge demo``: the whole system on one machine, one order from dispatch to final confirmation.

The demo starts a private mosquitto broker on a free loopback port, a simulated dispatcher
(:mod:`simulators.central`), the real ERP relay (``edge relay``, :mod:`edge.relay`) posting to a
SAP OData stand-in (:mod:`simulators.erp.sap`), and the gateway with MQTT sync; only the press,
the ERP and the people are simulated. Central sends master data and a dispatch list over MQTT,
an operator starts setup and production, the press runs, stops without a reason until the
operator gives one, jams, scrap is reported, confirmations go up through the relay to SAP and
SAP's verdicts come back. SAP refuses one confirmation (a planner took the order back, it is no
longer released); once it is released again a supervisor resends it. At the end the demo
compares SAP's ledger with what the gateway counted, waits for the outbox to empty and checks
the journal replay.

Every committed event is printed as it happens. Everything is stopped on the way out, also on
Ctrl-C or an error.

This is scenery around the gateway, so it lives with the simulators: it imports ``edge`` and the
simulators, and ``edge`` never imports it (``edge demo`` looks it up by name when it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from edge.app import open_engine, run_gateway
from edge.config import GatewayConfig, load_config
from edge.domain.events import Event, EventType
from edge.domain.inputs import (
    Action,
    Input,
    ReportScrap,
    ResendConfirmation,
    SetStopReason,
    Transition,
)
from edge.domain.model import Confirmation, ConfirmationStatus, OperationKey, OperationStatus
from edge.engine import Engine
from edge.relay.app import build_erp, open_ledger
from edge.relay.config import RelayConfig
from edge.relay.ledger import Ledger
from edge.relay.service import Relay
from edge.store.replay import verify
from edge.store.store import Store
from simulators import broker as mqtt_broker
from simulators.central import Dispatcher, MqttLink
from simulators.erp.sap import SapStandIn
from simulators.opcua_machine import MachineSimulator

CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
OPERATOR = "operator:1001"
SUPERVISOR = "supervisor:2001"
ORDER = OperationKey("4711", "0020")
SAP_USER, SAP_PASSWORD = "EDGE_RELAY", "demo-secret"
WAIT_S = 10.0  # the longest the demo waits for any one thing before it gives up
FREE_PLAY_JAM_EVERY = Decimal(45)  # --stay: good parts between two jams of the press
FREE_PLAY_JAM_S = 5.0
SETTLE_S = 10.0  # the longest it waits at the end for the last verdicts and the empty outbox
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130

MOSQUITTO_MISSING = """\
edge demo: the MQTT broker mosquitto is not installed; the demo runs its own private one.
  Install it once with either of:
    sudo ./scripts/demo                 (as root, the setup script installs what is missing)
    sudo apt-get install mosquitto
  then run ./scripts/demo again."""


class Central:
    """Central IT's side: the dispatcher (simulated: it sends the demo's dispatch list), the
    real ERP relay (``edge relay``, in this process) and the ERP (the SAP OData stand-in)."""

    def __init__(
        self, broker: mqtt_broker.Mosquitto, root: str, data_dir: Path, variance_reason: str
    ) -> None:
        self.root = root
        self.data_dir = data_dir
        self.link = MqttLink(broker.host, broker.port, client_id="central-demo")
        self.dispatcher = Dispatcher(self.link, [root])
        self.sap = SapStandIn(user=SAP_USER, password=SAP_PASSWORD, latency_s=(0.05, 0.15))
        secret = data_dir / "sap-password"
        secret.write_text(SAP_PASSWORD + "\n")
        self.relay_cfg = RelayConfig.model_validate(
            {
                "relay": {
                    "enterprise": root.split("/")[2],
                    "instance": "relay-demo",
                    "retry_min_s": 0.5,
                    "retry_max_s": 5.0,
                    "poll_s": 0.1,
                    "log_level": "warning",
                },
                "mqtt": {"host": broker.host, "port": broker.port},
                "ledger": {"url": f"sqlite:///{(data_dir / 'relay-ledger.db').resolve()}"},
                "erp": {
                    "system": "sap",
                    "service_url": "http://127.0.0.1/",  # replaced once the stand-in runs
                    "user": SAP_USER,
                    "password_file": str(secret),
                    "timeout_s": 5.0,
                    # the gateway's variance reason as SAP's 4-character code
                    "variance_reasons": {variance_reason: "0001"},
                },
            }
        )
        self.ledger: Ledger | None = None
        self.relay: Relay | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.sap.start)
        erp = self.relay_cfg.erp.model_copy(update={"service_url": self.sap.url})
        self.relay_cfg = self.relay_cfg.model_copy(update={"erp": erp})
        self.ledger = await open_ledger(self.relay_cfg.ledger)
        self.relay = Relay(self.relay_cfg, self.ledger, build_erp(self.relay_cfg))
        self._task = asyncio.create_task(self.relay.run(), name="erp-relay")
        await asyncio.wait_for(self.relay.link.connected.wait(), WAIT_S)
        await self.link.start()
        await self.link.wait_connected(WAIT_S)

    async def stop(self) -> None:
        await self.link.stop()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.ledger is not None:
            await self.ledger.close()
        await asyncio.to_thread(self.sap.close)


class DemoFailed(Exception):
    """Something the story waits for did not happen in time (the message says what)."""


# ------------------------------------------------------------------------- what central sends


def dispatch_operations() -> list[dict[str, Any]]:
    """The dispatch list central sends (the MQTT contract's ``OperationMsg`` fields)."""

    def op(
        order: str, operation: str, text: str, qty: int, seq: int, conf_no: str
    ) -> dict[str, Any]:
        return {
            "order_id": order,
            "operation": operation,
            "material": f"FG-{order}",
            "material_text": text,
            "quantity": qty,
            "unit": "PC",
            "sequence": seq,
            "planned_setup_s": 3.0,
            "planned_run_s_per_unit": 0.25,
            "under_tolerance_pct": 2,
            "over_tolerance_pct": 10,
            "confirmation_no": conf_no,
        }

    return [
        op("4711", "0020", "Bracket 30x15", 60, 10, "0000456789"),
        op("4711", "0030", "Bracket 30x15, deburr", 60, 20, "0000456790"),
        op("4712", "0010", "Hinge plate", 200, 30, "0000456801"),
    ]


def master_data(cfg: GatewayConfig) -> dict[str, Any]:
    """Central's reason catalogues: the same as the demo config's, as version 1."""
    md = cfg.master_data
    return {
        "version": 1,
        "stop_reasons": [
            {"code": r.code, "text": r.text, "category": r.category} for r in md.stop_reasons
        ],
        "scrap_reasons": [{"code": r.code, "text": r.text} for r in md.scrap_reasons],
        "alarm_reasons": dict(md.alarm_reasons),
        "crew_size": md.crew_size,
    }


# ------------------------------------------------------------------------------- the narration


class Narrator:
    """Prints each committed event as one line a person can follow."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.t0 = time.monotonic()
        self.out = out

    def line(self, text: str) -> None:
        print(f"  {time.monotonic() - self.t0:6.1f}s  {text}", file=self.out, flush=True)

    def say(self, text: str) -> None:
        """What happens at the press, in central or in the ERP (not a gateway event)."""
        self.line(f"> {text}")

    def __call__(self, events: Sequence[Event]) -> None:
        for ev in events:
            text = describe(ev)
            if text:
                self.line(f"  {text}")


def _reasons(by_reason: object) -> str:
    """[{'code': 'S03', 'qty': 2}] -> ' (S03 2)'."""
    if not isinstance(by_reason, list) or not by_reason:
        return ""
    return " (" + ", ".join(f"{r['code']} {r['qty']}" for r in by_reason) + ")"


def _erp_ref(ref: object) -> str:
    """The ERP's reference for a posting, e.g. 'ERP confirmation 0000456789, counter 00000001'."""
    if not isinstance(ref, str):
        return ""
    try:
        erp = json.loads(ref)
    except ValueError:
        return f" ({ref})"
    group, count = erp.get("confirmation_group"), erp.get("confirmation_count")
    return f" as ERP confirmation {group}, counter {count}" if group and count else ""


def _conf_no(conf_id: object) -> str:
    """'4711/0020#2' -> '#2'."""
    return "#" + str(conf_id).rpartition("#")[2]


def describe(ev: Event) -> str | None:
    d = ev.data
    op = f"{ev.op}  " if ev.op else ""
    who = f"  ({ev.actor})" if ev.actor else ""
    match ev.type:
        case EventType.MASTER_DATA_APPLIED:
            return f"master data v{d['version']} from central applied (reason catalogues, alarms)"
        case EventType.DISPATCH_APPLIED:
            ops = ", ".join(d["operations"])  # type: ignore[arg-type]
            return f"dispatch list v{d['version']} from central applied: {ops}"
        case EventType.OPERATION_STATE_CHANGED:
            return f"{op}{d['from']} -> {d['to']}{who}"
        case EventType.STOP_STARTED:
            alarm = f", alarm {d['alarm']}" if d.get("alarm") else ""
            origin = {"machine_state": "press state", "no_count": "no parts counted"}.get(
                str(d["origin"]), str(d["origin"])
            )
            return f"stop {d['stop_id']} started ({origin}{alarm})"
        case EventType.STOP_REASON_REQUESTED:
            return f"stop {d['stop_id']}: REASON PENDING - the panel and stack light ask for it"
        case EventType.STOP_REASON_SET:
            return f"stop {d['stop_id']}: reason {d['reason']} (from {d['source']}){who}"
        case EventType.STOP_ENDED:
            kind = "micro-stop" if d["micro"] else "stop"
            return f"{kind} {d['stop_id']} ended after {d['duration_s']:.1f} s"
        case EventType.CONFIRMATION_CREATED:
            return (
                f"{op}confirmation #{d['conf_index']} {d['kind']}: yield {d['yield_qty']}, "
                f"scrap {d['scrap_qty']}{_reasons(d['scrap_by_reason'])}"
                " -> queued for the ERP relay"
            )
        case EventType.CONFIRMATION_RESENT:
            return (
                f"{op}confirmation #{d['conf_index']} sent again with a new idempotency key "
                f"{str(d['idem_key'])[:8]}...{who}"
            )
        case EventType.CONFIRMATION_RESULT:
            what = "reversal of confirmation" if d.get("reversal") else "confirmation"
            verdict = str(d["status"])
            if verdict == "rejected":
                detail = f': "{d.get("message")}"'
            else:
                detail = _erp_ref(d.get("erp_ref"))
            return f"{op}ERP verdict on {what} {_conf_no(d['conf_id'])}: {verdict}{detail}"
        case EventType.SCRAP_REPORTED:
            return f"{op}{d['qty']} scrap reported, reason {d['reason']}{who}"
        case EventType.TARGET_REACHED:
            return f"{op}target reached: {d['good']} of {d['target']}"
        case EventType.PICKED_OUT_OF_SEQUENCE:
            return f"{op}picked out of sequence (next was {d['expected']})"
        case EventType.COUNTER_DISCONTINUITY:
            return f"counter {d['source']} jumped {d['previous']} -> {d['value']}: discontinuity"
        case _:
            return None


# ---------------------------------------------------------------------------------- the story


async def until(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Wait until ``check()`` holds; DemoFailed naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise DemoFailed(f"waited {timeout:.0f} s for {what}; it did not happen")
        await asyncio.sleep(0.05)


def confirmations(engine: Engine, key: OperationKey = ORDER) -> list[Confirmation]:
    return sorted(
        (c for c in engine.wc.confirmations.values() if c.key == key), key=lambda c: c.counter
    )


def business_waiting(store: Store) -> int:
    """Outbox rows for central's business topics (``_mes_v1``) that are not finished yet."""
    n: int = store.conn.execute(
        "SELECT COUNT(*) FROM outbox WHERE state != 'done' AND topic LIKE '\\_mes\\_v1/%' "
        "ESCAPE '\\'"
    ).fetchone()[0]
    return n


def panel_url(cfg: GatewayConfig) -> str:
    host = "127.0.0.1" if cfg.panel.host in ("0.0.0.0", "") else cfg.panel.host
    return f"http://{host}:{cfg.panel.port}/"


async def panel_answers(cfg: GatewayConfig) -> bool:
    """Does the operator panel answer at its address (and not some other program)?"""
    host = "127.0.0.1" if cfg.panel.host in ("0.0.0.0", "") else cfg.panel.host
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, cfg.panel.port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")
        await writer.drain()
        page = await asyncio.wait_for(reader.read(), 2.0)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return b"Operator panel" in page


class Story:
    """What central, the ERP, the press and the people do, in order."""

    def __init__(
        self,
        cfg: GatewayConfig,
        central: Central,
        root: str,
        narrator: Narrator,
        press: MachineSimulator,
    ) -> None:
        self.cfg = cfg
        self.press = press
        self.central = central
        self.root = root
        self.narrator = narrator
        self.gateway_online = asyncio.Event()
        self.finished = False
        self.failure: str | None = None
        self.stay = False
        central.link.subscribe(f"{root}/_mes_v1/health", self._on_health)

    def _on_health(self, _topic: str, payload: bytes) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            if json.loads(payload).get("online") is True:
                self.gateway_online.set()

    async def run(self, engine: Engine, stop: asyncio.Event, *, stay: bool = False) -> None:
        self.stay = stay
        panel = asyncio.create_task(self._announce_panel(), name="demo-panel-url")
        try:
            if await self._unless_stopped(self._run(engine), stop):
                self.finished = True
        except DemoFailed as exc:
            self.failure = str(exc)
        except TimeoutError as exc:  # central could not publish in time
            self.failure = str(exc) or "a timeout"
        if stay and self.finished:
            try:
                await self._free_play(engine)
            finally:
                panel.cancel()
                stop.set()
        else:
            panel.cancel()
            stop.set()

    @staticmethod
    async def _unless_stopped(story: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
        """Run ``story`` until it ends (True) or the gateway is told to stop (Ctrl-C: False;
        what the story waits for then never comes, so it is not a failure of the story)."""
        task = asyncio.ensure_future(story)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stopped.cancel()
        if task.done():
            task.result()  # its failure, if it failed
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _announce_panel(self) -> None:
        """The panel's address as soon as it answers (it starts with the gateway)."""
        panel = self.cfg.panel
        if not panel.enabled:
            return
        url = panel_url(self.cfg)
        deadline = time.monotonic() + WAIT_S
        while not await panel_answers(self.cfg):
            if time.monotonic() > deadline:
                self.narrator.say(
                    f"the operator panel does not answer at {url} (is another program using "
                    f"port {panel.port}? --panel-port N moves it); it keeps trying"
                )
                return
            await asyncio.sleep(0.2)
        later = "; after the story it is yours" if self.stay else ""
        self.narrator.say(
            f"the operator panel is up: open {url} in a browser on this machine to watch{later}"
        )

    async def _free_play(self, engine: Engine) -> None:
        """After the story: the panel is the user's. The press follows what the operator does
        on it (setup, production, interruption), and jams now and then, so that a stop asks
        for its reason."""
        self.narrator.say(
            "the story is over, every confirmation answered, the outbox is empty; the gateway "
            f"keeps running. Open {panel_url(self.cfg)} and work the next order with taps: "
            "the press follows, jams every 45 parts or so, and the ERP answers every "
            "confirmation. Ctrl-C stops everything and prints the summary."
        )
        press = self.press
        doing: str | None = None
        made_since_jam = Decimal(0)
        last_good: dict[str, Decimal] = {}
        while True:
            await asyncio.sleep(0.2)
            statuses = {op.status for op in engine.wc.active}
            want = (
                "setup" if OperationStatus.SETUP in statuses
                else "run" if OperationStatus.RUNNING in statuses
                else "idle"
            )  # fmt: skip
            for op in engine.wc.active:
                key = str(op.key)
                made_since_jam += op.counted.good - last_good.get(key, op.counted.good)
                last_good[key] = op.counted.good
            if want == "run" and made_since_jam >= FREE_PLAY_JAM_EVERY:
                made_since_jam = Decimal(0)
                self.narrator.say("the press jams (alarm E-217): the panel asks for the reason")
                await press.stop(alarm="E-217")
                await asyncio.sleep(FREE_PLAY_JAM_S)
                doing = None  # back to what the operator wants
            if want != doing:
                doing = want
                await {"setup": press.setup, "run": press.run, "idle": press.idle}[want]()

    async def _run(self, engine: Engine) -> None:
        say = self.narrator.say
        central, sap = self.central, self.central.sap.state
        press = self.press

        async def do(inp: Input) -> None:
            outcome = await engine.submit(inp)
            if outcome.rejection is not None:
                say(f"the gateway REFUSED this: {outcome.rejection.message}")

        async def good_reaches(qty: int) -> None:
            await until(
                f"{qty} good parts on {ORDER}",
                lambda: (
                    ORDER in engine.wc.operations
                    and engine.wc.operations[ORDER].counted.good >= qty
                ),
            )

        def verdict(counter: int, status: ConfirmationStatus) -> Callable[[], bool]:
            def check() -> bool:
                return any(
                    c.counter == counter and c.status is status for c in confirmations(engine)
                )

            return check

        try:
            await until(
                "the press's state over OPC UA",
                lambda: engine.wc.header.machine_state is not None,
                timeout=WAIT_S,
            )
            say(f"the gateway reads the press over OPC UA ({press.endpoint})")
            await until("the gateway's MQTT connection", self.gateway_online.is_set, timeout=WAIT_S)
            say("central sees the gateway online (the health message it keeps on the broker)")
            md = master_data(self.cfg)
            stop_codes = ", ".join(r["code"] for r in md["stop_reasons"])
            say(f"central sends master data v1 over MQTT: stop reasons {stop_codes}, ...")
            await central.dispatcher.send_masterdata(self.root, md)
            ops = dispatch_operations()
            say(
                f"central sends dispatch list v1 over MQTT: {len(ops)} operations, "
                f"first {ops[0]['order_id']}/{ops[0]['operation']} "
                f"({ops[0]['quantity']} x {ops[0]['material_text']})"
            )
            await central.dispatcher.send_dispatch(self.root, 1, ops)
            try:
                await central.dispatcher.wait_for("received", timeout=WAIT_S)
            except TimeoutError:
                raise DemoFailed(
                    f"waited {WAIT_S:.0f} s for the gateway's receipt of the dispatch list"
                ) from None
            say("central got the gateway's receipt for dispatch list v1")
            await asyncio.sleep(0.5)
            say(f"operator starts setup of {ORDER} on the panel")
            await do(Transition(Action.START_SETUP, str(ORDER), OPERATOR, engine.now()))
            await press.setup()
            await asyncio.sleep(2.5)
            say("first-off part is good: operator starts production (setup parts count as scrap)")
            await do(Transition(Action.START_PRODUCTION, str(ORDER), OPERATOR, engine.now()))
            await press.run()
            await good_reaches(24)
            say("the press stops with alarm E-217 (not mapped to a reason)")
            await press.stop(alarm="E-217")
            await asyncio.sleep(3.5)
            await press.run()
            await asyncio.sleep(0.5)
            say("operator taps 'Material missing' for the stop")
            await do(SetStopReason("M01", OPERATOR, engine.now()))
            await until(
                "the ERP's verdict on confirmation #1", verdict(1, ConfirmationStatus.POSTED)
            )
            say(
                f"a planner takes order {ORDER.order} back in SAP (no longer released): "
                "SAP will refuse its confirmations"
            )
            sap.register_order(ORDER.order, released=False)
            await good_reaches(38)
            say("the press jams (alarm E-100), cleared within a second")
            await press.stop(alarm="E-100")
            await asyncio.sleep(0.8)
            await press.run()
            await until(
                "the ERP's verdict on confirmation #2", verdict(2, ConfirmationStatus.REJECTED)
            )
            await asyncio.sleep(0.3)
            say(f"the planner releases order {ORDER.order} again in SAP")
            sap.release_order(ORDER.order)
            say("a supervisor sees the rejected confirmation #2 on the panel and resends it")
            await do(ResendConfirmation(str(ORDER), 2, SUPERVISOR, engine.now()))
            await until("the ERP's verdict on the resent #2", verdict(2, ConfirmationStatus.POSTED))
            await good_reaches(45)
            say("operator sorts out 2 parts with a burr")
            await do(ReportScrap(Decimal(2), "S03", OPERATOR, engine.now()))
            await good_reaches(64)
            say(f"operator completes {ORDER} a few parts over target, within tolerance")
            await do(Transition(Action.COMPLETE, str(ORDER), OPERATOR, engine.now()))
            say("the press goes idle: waiting for the next order is not down time")
            await press.idle()
            await self._settle(engine)
        finally:
            await press.idle()

    async def _settle(self, engine: Engine) -> None:
        """Wait (bounded) for every verdict and until no business message is left in the outbox."""
        await until(
            "the ERP's verdicts on all confirmations",
            lambda: (
                bool(confirmations(engine))
                and all(c.status is ConfirmationStatus.POSTED for c in confirmations(engine))
            ),
            timeout=SETTLE_S,
        )
        deadline = time.monotonic() + SETTLE_S
        while (waiting := await engine.run_store(business_waiting, engine.store)) > 0:
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"waited {SETTLE_S:.0f} s for the outbox to empty; "
                    f"{waiting} business messages are still waiting"
                )
            await asyncio.sleep(0.1)
        if not self.stay:
            self.narrator.say(
                "every confirmation answered, the outbox is empty: the demo stops the gateway"
            )


# -------------------------------------------------------------------------------- the summary


def _scrap_text(scrap: Mapping[str, Decimal]) -> str:
    total = sum(scrap.values(), Decimal(0))
    parts = ", ".join(f"{code} {qty}" for code, qty in scrap.items())
    return f"{total} ({parts})" if parts else str(total)


def worked(engine: Engine) -> list[OperationKey]:
    """The operations worked: the story's first, then any other (the user's, with --stay)."""
    keys = [
        key
        for key, op in engine.wc.operations.items()
        if op.status is not OperationStatus.DISPATCHED or confirmations(engine, key)
    ]
    return sorted(keys, key=lambda k: (k != ORDER, str(k)))


def order_summary(engine: Engine, central: Central, key: OperationKey) -> list[str]:
    """Print what the gateway and SAP hold for one operation; what does not hold, in words."""
    failed: list[str] = []
    wc = engine.wc
    op = wc.operations[key]
    completed = op.status is OperationStatus.COMPLETED
    print(f"\nWhat the gateway holds for {key}:")
    print(
        f"  status {op.status.value}; counted good {op.counted.good}, "
        f"scrap {_scrap_text(op.counted.scrap)}"
    )
    te = wc.time_elements(op)
    by_reason = ", ".join(f"{k} {v / 1000:.1f} s" for k, v in te.down_by_reason_ms.items())
    print(
        f"  time elements: setup {te.setup_ms / 1000:.1f} s, production "
        f"{te.production_ms / 1000:.1f} s, down {te.down_ms / 1000:.1f} s"
        f"{f' ({by_reason})' if by_reason else ''}, waiting {te.waiting_ms / 1000:.1f} s"
    )
    confs = confirmations(engine, key)
    print("  confirmations and the ERP's verdicts:" if confs else "  no confirmation yet")
    for c in confs:
        resent = f", after {c.retries} resend" if c.retries == 1 else ""
        if c.retries > 1:
            resent = f", after {c.retries} resends"
        ref = _erp_ref(c.erp_ref)
        print(
            f"    #{c.counter} {'final  ' if c.final else 'partial'} yield {c.tally.good:>3} "
            f"scrap {c.tally.scrap_total:>2}  posting date {c.posting_date}  "
            f"{c.status.value}{ref}{resent}"
        )
        if c.status is not ConfirmationStatus.POSTED:
            what = (
                "has no verdict from the ERP yet"
                if c.status is ConfirmationStatus.AWAITING_RESULT
                else f"is {c.status.value}"
            )
            failed.append(f"{key} confirmation #{c.counter} {what}")
    total = sum((c.tally.good for c in confs), Decimal(0))
    if completed:
        same = total == op.counted.good
        print(f"  yields sum to {total} {'=' if same else '!='} counted good {op.counted.good}")
        if not same:
            failed.append(f"{key}: the confirmations' yields ({total}) are not the count")

    sap = central.sap.state
    records = [
        r
        for r in sap.ledger()
        if r.order_id.lstrip("0") == key.order and r.operation == key.operation
    ]
    posted = [r for r in records if not r.is_reversal and not r.is_reversed]
    erp = sap.totals(key.order, key.operation)
    final = any(r.is_final for r in posted)
    print(f"\nWhat SAP posted for {key} (the SAP stand-in's ledger, through the ERP relay):")
    for r in posted:
        print(
            f"    confirmation {r.group}/{r.count}  yield {r.yield_qty:>7}  scrap "
            f"{r.scrap_qty:>6}  {'final' if r.is_final else 'partial'}  "
            f"{r.values.get('ConfirmationText', '')}"
        )
    print(
        f"  {len(posted)} confirmations, final one included: {'yes' if final else 'no'}; "
        f"yield {erp['yield']}, scrap {erp['scrap']}"
    )
    twice = sap.duplicates()
    if completed:  # everything counted is confirmed: SAP must hold the count
        good = op.counted.good
        scrap = sum(op.counted.scrap.values(), Decimal(0))
        against = f"gateway counted good {good} / scrap {scrap}"
        if not final:
            failed.append(f"{key} is completed but SAP has no final confirmation")
    else:  # SAP holds what was confirmed so far
        ok_confs = [c for c in confs if c.status is ConfirmationStatus.POSTED]
        good = sum((c.tally.good for c in ok_confs), Decimal(0))
        scrap = sum((c.tally.scrap_total for c in ok_confs), Decimal(0))
        against = (
            f"the gateway's posted confirmations yield {good} / scrap {scrap} ({op.status.value}"
            f", counted good {op.counted.good} so far)"
        )
    match = erp["yield"] == good and erp["scrap"] == scrap
    print(
        f"  SAP yield {erp['yield']} / scrap {erp['scrap']} vs. {against}: "
        f"{'they match' if match else 'MISMATCH'}; posted twice: {len(twice) or 'none'}"
    )
    if not match:
        failed.append(
            f"SAP's yield {erp['yield']} / scrap {erp['scrap']} for {key} differ from the "
            f"gateway's {good} / {scrap}"
        )
    return failed


def stops_summary(engine: Engine) -> None:
    """Every stop still open, or still waiting for its reason; how many there were."""
    stops = list(engine.wc.stops.values())
    micro = sum(st.micro for st in stops)
    print(f"\nStops: {len(stops)} ({micro} micro-stop{'' if micro == 1 else 's'})")
    waiting = [st for st in stops if st.open or st.reason_pending]
    for st in waiting:
        since = time.strftime("%H:%M:%S", time.localtime(st.start.wall_ms / 1000))
        alarm = f", alarm {st.alarm}" if st.alarm else ""
        reason = st.reason or "NOT GIVEN (the panel asks for it)"
        state = "open" if st.open else "ended"
        print(
            f"  stop {st.stop_id} {state}, since {since} ({st.origin.value}{alarm}, "
            f"{', '.join(st.operations) or 'no operation'}): reason {reason}"
        )
    if not waiting:
        print("  none open, none waiting for a reason")


def summary(engine: Engine, cfg: GatewayConfig, central: Central) -> list[str]:
    """Print what the gateway, the ERP ledger and the SQLite file hold for every operation
    worked; return what does not hold, in words (empty when every check holds)."""
    failed: list[str] = []
    keys = worked(engine)
    if ORDER not in keys:
        failed.append(f"the story's order {ORDER} was not worked")
    for key in keys:
        failed += order_summary(engine, central, key)
    stops_summary(engine)
    twice = central.sap.state.duplicates()
    if twice:
        failed.append(f"SAP posted {len(twice)} confirmations twice")

    store = engine.store
    print(f"\nThe SQLite file {cfg.store.path}:")
    waiting = business_waiting(store)
    print(
        f"  journal: {store.journal_count()} inputs; outbox: {waiting} business messages "
        f"waiting ({store.outbox_depth()} of any kind, historian values included)"
    )
    if waiting:
        failed.append(f"{waiting} business messages still in the outbox")
    print("  sent to central over MQTT, by topic:")
    for topic, n in store.conn.execute(
        "SELECT topic, COUNT(*) FROM outbox WHERE state = 'done' GROUP BY topic ORDER BY topic"
    ):
        print(f"    {n:4d}  {topic}")
    diffs = verify(store)
    agree = "yes" if not diffs else f"NO ({len(diffs)} rows differ)"
    print(f"  projections equal the journal replay: {agree}")
    if diffs:
        failed.append(f"the projections differ from the journal replay in {len(diffs)} rows")
    return failed


async def _stop_quietly(what: str, stop: Callable[[], Awaitable[None]]) -> None:
    try:
        await asyncio.wait_for(stop(), 10)
    except Exception as exc:  # stopping: report and go on stopping the rest
        print(f"edge demo: stopping {what} failed: {exc!r}", file=sys.stderr)


def opcua_block(press: MachineSimulator) -> str:
    """The press's OPC UA link, as an installer would paste it after `edge browse`."""
    ids = press.node_ids
    return f"""
[[sources.opcua]]
name = "press"
endpoint = "{press.endpoint}"
template = "machinery"
publishing_interval_ms = 50
watchdog_s = 2
state_node = "{ids["state"]}"
mode_node = "{ids["mode"]}"
alarm_node = "{ids["alarm"]}"

[[sources.opcua.counters]]
counter = "press_good"
node = "{ids["good"]}"
"""


PASSED = (
    "every confirmation posted once, SAP's ledger equals what the gateway confirmed, the "
    "outbox is empty, the projections equal the journal replay"
)


async def run_demo(
    data_dir: Path, keep: bool, stay: bool = False, panel_port: int | None = None
) -> int:
    """The demo; its last line says PASS or FAIL with what failed, and the exit code follows
    it (0 only for PASS; 130 when interrupted before the story's end)."""
    failed: list[str] = []
    code = EXIT_FAILED
    try:
        code = await _demo(data_dir, keep, stay, panel_port, failed)
    except asyncio.CancelledError:  # Ctrl-C outside the gateway's run (starting, stopping)
        failed.append("interrupted (Ctrl-C)")
        code = EXIT_INTERRUPTED
        raise
    except Exception as exc:  # said in the last line; the traceback is for whoever digs
        traceback.print_exc()
        failed.append(f"{type(exc).__name__}: {exc}")
        code = EXIT_FAILED
    finally:
        if code == 0 and not failed:
            print(f"\nedge demo: PASS: {PASSED}", flush=True)
        else:
            print(f"\nedge demo: FAIL: {'; '.join(failed) or 'see above'}", flush=True)
    return 0 if code == 0 and not failed else code or EXIT_FAILED


async def _demo(
    data_dir: Path, keep: bool, stay: bool, panel_port: int | None, failed: list[str]
) -> int:
    try:
        mqtt_broker.find_mosquitto()
    except FileNotFoundError:
        print(MOSQUITTO_MISSING, file=sys.stderr)
        failed.append("mosquitto is not installed")
        return EXIT_FAILED
    if not keep and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / "edge.db"
    # The central simulator is scenery here: the narration says what it does.
    logging.getLogger("simulators.central").setLevel(logging.ERROR)
    logging.getLogger("edge.relay").setLevel(logging.ERROR)  # the narration tells its verdicts

    broker = mqtt_broker.Mosquitto(data_dir / "mosquitto", persistence=False)
    central: Central | None = None
    press = MachineSimulator(cycle_s=0.25, jitter=0.1, scrap_rate=0.0, setup_slowdown=4.0, seed=7)
    try:
        broker.start()
        await press.start_server()
        config_file = data_dir / "edge.toml"
        config_file.write_text(CONFIG.read_text() + opcua_block(press))
        cfg = load_config(
            config_file,
            env={
                "EDGE_STORE__PATH": str(db),
                "EDGE_MQTT__HOST": broker.host,
                "EDGE_MQTT__PORT": str(broker.port),
                **({"EDGE_PANEL__PORT": str(panel_port)} if panel_port else {}),
            },
        )
        root = cfg.mqtt.root_for(cfg.gateway.work_center)
        central = Central(broker, root, data_dir, cfg.confirmations.variance_reason)
        narrator = Narrator()
        story = Story(cfg, central, root, narrator, press)
        await central.start()
        stop = asyncio.Event()
        engine = await open_engine(cfg)
        if ORDER in engine.wc.operations:  # --keep after a run: the story needs a new order
            status = engine.wc.operations[ORDER].status.value
            await engine.close()
            print(
                f"edge demo: {db} already holds the demo's order {ORDER} ({status}), so the "
                "story cannot run on it again.\n  Run the demo without --keep to start afresh "
                f"(that removes {data_dir}).",
                file=sys.stderr,
            )
            failed.append(f"{db} already holds the story's order (--keep)")
            return EXIT_FAILED
        print(
            f"edge demo: work center {cfg.gateway.work_center}, database {db}\n"
            f"  the press: an OPC UA server (machine simulator) at {press.endpoint}\n"
            f"  mosquitto on {broker.host}:{broker.port}; the gateway, a simulated dispatcher "
            f"and the ERP relay\n  (edge relay) talk over it under {root}; the relay posts to "
            f"a SAP OData stand-in\n  at {central.sap.url}\n"
            "  Lines with '>' say what happens at the press, in central or in the ERP; the "
            "others\n  are what the gateway records, printed as it commits them. "
            "Ctrl-C stops everything.\n"
        )
        engine.add_listener(narrator)

        async def scripted(e: Engine) -> None:
            await story.run(e, stop, stay=stay)

        await run_gateway(cfg, components=(scripted,), stop=stop, engine=engine)
        if story.failure is not None:
            failed.append(story.failure)
            return EXIT_FAILED
        if not story.finished:
            print("\nedge demo: interrupted; everything is stopped", file=sys.stderr)
            failed.append("interrupted (Ctrl-C) before the story's end")
            return EXIT_INTERRUPTED
        if stay:
            print("\nCtrl-C: everything is stopped. What was worked, the story's order first:")
        engine.store.open(boot=False)  # read what was committed, as a new start would
        try:
            failed += summary(engine, cfg, central)
        finally:
            engine.store.close()
        return EXIT_FAILED if failed else 0
    finally:
        if central is not None:
            await _stop_quietly("central (dispatcher, relay, SAP)", central.stop)
        await _stop_quietly("the press simulator", press.aclose)
        broker.stop()
