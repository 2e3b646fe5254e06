"""Drive a real gateway daemon (``python -m edge run``) through a real mosquitto with fuzz.

Central's side is a plain MQTT 5 client. After every fuzz message it sends a *probe*: a resync
command the gateway must refuse (its body has a field the contract does not know), with the
msg_id ``probe-<n>``. The downlink handles one message at a time and publishes its refusals in
that order, so every refusal that arrives between probe n-1 and probe n answers message n, and
the probe's refusal says message n was handled. That makes the count exact, also for messages
without a readable msg_id, and tells which message was in hand when the daemon died.

A daemon that dies (or stops answering) is a finding: the message in hand is kept as a
reproducer, the daemon is started again under a new MQTT client id (a fresh session, so the
broker does not hand it the same message again) and the run goes on with the next message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jsonschema  # type: ignore[import-untyped]
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from simulators.broker import Mosquitto
from tests.fuzz.messages import RELAY, SCHEMAS, FuzzMessage

REPO: Final = Path(__file__).resolve().parents[2]
ENTERPRISE: Final = "acme"
ROOT: Final = f"umh/v1/{ENTERPRISE}/plant1/stamping/line4/PRESS07"
RELAY_TOPIC: Final = f"umh/v1/{ENTERPRISE}/_mes_v1/relay/state"
REJECTED: Final = f"{ROOT}/_mes_v1/rejected"
HEALTH: Final = f"{ROOT}/_mes_v1/health"
PROBE_TOPIC: Final = f"{ROOT}/_mes_v1/cmd/resync"

CONFIG: Final = """
[gateway]
edge_id = "wc-press-07"
work_center = "PRESS07"
timezone = "Europe/Berlin"
log_level = "warning"
log_json = true

[store]
path = "{db}"
synchronous = "normal"

[engine]
tick_interval_s = 0.5

[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
client_id = "{client_id}"
enterprise = "{enterprise}"
site = "plant1"
area = "stamping"
line = "line4"
reconnect_min_s = 0.2
reconnect_max_s = 1
health_interval_s = 1
historical_after_s = 2

[[counting.sources]]
name = "press_good"
kind = "good"
signal = "pulse"

[confirmations]
every_good = 10

[[master_data.scrap_reasons]]
code = "S03"
text = "Burr"

[[master_data.stop_reasons]]
code = "M01"
text = "Material missing"
"""


def topic_of(m: FuzzMessage) -> str:
    return RELAY_TOPIC if m.topic == RELAY else f"{ROOT}/{m.topic}"


def probe_payload(n: int) -> bytes:
    body = {"schema": "mes.resync/1", "msg_id": f"probe-{n}", "body": {"fuzz_probe": n}}
    return json.dumps(body).encode()


# ------------------------------------------------------------------------------ the daemon


class Daemon:
    """``python -m edge run`` as a child process, with its stderr (JSON log lines) in a file."""

    def __init__(self, workdir: Path, broker: Mosquitto, *, repo: Path = REPO) -> None:
        self.repo = repo  # whose gateway runs (another checkout to compare with)
        self.workdir = workdir
        self.broker = broker
        self.db = workdir / "edge.db"
        self.log = workdir / "edge.log"
        self.config = workdir / "edge.toml"
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        self.config.write_text(
            CONFIG.format(
                db=self.db,
                port=self.broker.port,
                client_id=f"edge-fuzz-{self.starts}",
                enterprise=ENTERPRISE,
            )
        )
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
                cwd=self.repo,
                env={**os.environ, "PYTHONPATH": str(self.repo)},
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the daemon's exit code (0: a clean stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def verify(self) -> subprocess.CompletedProcess[str]:
        """``edge verify``: the projections equal a replay of the journal."""
        return subprocess.run(
            [sys.executable, "-m", "edge", "verify", "--config", str(self.config)],
            cwd=self.repo,
            env={**os.environ, "PYTHONPATH": str(self.repo)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def error_lines(lines: Sequence[str]) -> list[str]:
    """Log lines at error level or above, and anything that is not a JSON log line (a
    traceback printed by the interpreter on its way out)."""
    found: list[str] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            if line.strip():
                found.append(line)
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            found.append(line)
    return found


# ------------------------------------------------------------------------------ central


@dataclass(slots=True)
class Answer:
    """One message on ``_mes_v1/rejected``."""

    payload: bytes
    body: dict[str, Any] | None

    @property
    def msg_id(self) -> Any:
        return None if self.body is None else self.body.get("msg_id")


class Central:
    """A plain MQTT 5 client: publishes the fuzz, collects refusals and health."""

    def __init__(self, broker: Mosquitto) -> None:
        self._cond = threading.Condition()
        self.answers: list[Answer] = []
        self.health: list[dict[str, Any]] = []
        self._connected = threading.Event()
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="fuzz-central",
            protocol=paho.MQTTv5,
        )
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.max_inflight_messages_set(100)
        self.client = c
        self.broker = broker

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(REJECTED, 1), (HEALTH, 1)])
        self._connected.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        with self._cond:
            if msg.topic == REJECTED:
                self.answers.append(Answer(payload, body if isinstance(body, dict) else None))
            elif isinstance(body, dict):
                self.health.append({**body, "_received": time.monotonic()})
            self._cond.notify_all()

    def start(self) -> Central:
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self._connected.wait(10), "central could not connect to the broker"
        time.sleep(0.2)  # the SUBACK
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def wait(self, predicate: Any, timeout: float, alive: Any = None) -> bool:
        """Wait until ``predicate()`` holds (True) or ``alive()`` fails or time runs out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or (alive is not None and not alive()):
                    return bool(predicate())
                self._cond.wait(min(left, 0.1))
            return True

    def probe_seen(self, n: int, start: int) -> bool:
        return any(a.msg_id == f"probe-{n}" for a in self.answers[start:])


# ------------------------------------------------------------------------------ the run


@dataclass(slots=True)
class Finding:
    """A property that did not hold, with the message that broke it."""

    kind: str
    detail: str
    message: FuzzMessage | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "detail": self.detail}
        if self.message is not None:
            out.update(index=self.message.index, **self.message.repro())
        return out


@dataclass(slots=True)
class Outcome:
    message: FuzzMessage
    answers: list[Answer] = field(default_factory=list)
    handled: bool = False  # its probe came back: the downlink finished with it


@dataclass(slots=True)
class Run:
    outcomes: list[Outcome]
    findings: list[Finding]
    notes: list[Finding]
    restarts: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        answered = sum(1 for o in self.outcomes if o.answers)
        return {
            "messages": len(self.outcomes),
            "handled": sum(o.handled for o in self.outcomes),
            "refused": answered,
            "accepted_or_ignored": sum(1 for o in self.outcomes if o.handled and not o.answers),
            "restarts_after_crash": self.restarts,
            "seconds": round(self.seconds, 1),
            "findings": len(self.findings),
            "notes": len(self.notes),
        }


# Refusals that say a check was missing: the core hit a bug, or a handler raised.
UNHANDLED: Final = ("internal error", "the gateway could not handle this message")
REJECTED_SCHEMA: Final = json.loads((SCHEMAS / "_mes_v1.rejected.json").read_text())


def check_answer(m: FuzzMessage, a: Answer) -> list[Finding]:
    """One refusal of ``m``: a contract-valid body, the right topic, a reason, the msg_id."""
    problems: list[Finding] = []
    if a.body is None:
        return [Finding("answer_not_json", f"refusal payload {a.payload[:200]!r}", m)]
    errors = [
        e.message for e in jsonschema.Draft202012Validator(REJECTED_SCHEMA).iter_errors(a.body)
    ]
    if errors:
        problems.append(Finding("answer_breaks_contract", "; ".join(errors)[:300], m))
    reason = a.body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        problems.append(Finding("answer_without_reason", f"reason {reason!r}", m))
    if a.body.get("topic") != topic_of(m):
        problems.append(Finding("answer_wrong_topic", f"topic {a.body.get('topic')!r}", m))
    if a.msg_id not in m.msg_ids:
        expected = sorted(m.msg_ids, key=str)
        problems.append(
            Finding(
                "answer_wrong_msg_id",
                f"quoted msg_id {a.msg_id!r}, expected one of {expected!r}; reason {reason!r}",
                m,
            )
        )
    if isinstance(reason, str) and reason.startswith(UNHANDLED):
        problems.append(Finding("unhandled_exception", reason[:300], m))
    return problems


def check_outcome(o: Outcome) -> tuple[list[Finding], list[Finding]]:
    """(findings, notes) for one handled message."""
    m = o.message
    findings: list[Finding] = []
    notes: list[Finding] = []
    if m.topic == RELAY:
        if o.answers:
            notes.append(Finding("relay_state_answered", o.answers[0].payload[:200].decode(), m))
        return findings, notes
    if len(o.answers) > 1:
        reasons = [a.body.get("reason") if a.body else a.payload[:80] for a in o.answers]
        findings.append(Finding("answered_twice", f"{len(o.answers)} refusals: {reasons!r}", m))
    for a in o.answers:
        findings += check_answer(m, a)
    if not o.answers and m.must_reject and m.duplicate_of is None:
        findings.append(
            Finding(
                "not_refused",
                "neither refused on _mes_v1/rejected nor acceptable (it can only be refused)",
                m,
            )
        )
    if not o.answers and m.schema_valid is False and not m.must_reject:
        notes.append(Finding("accepted_against_schema", "the published schema forbids it", m))
    for a in o.answers:
        where = a.body.get("field") if a.body else None
        if m.schema_valid and isinstance(where, str) and (where == "" or where.startswith("body.")):
            reason = str(a.body.get("reason") if a.body else "")[:200]
            notes.append(Finding("schema_valid_refused_by_model", reason, m))
    return findings, notes


def run_fuzz(
    messages: Sequence[FuzzMessage],
    daemon: Daemon,
    central: Central,
    *,
    window: int = 25,
    answer_timeout_s: float = 30.0,
    budget_s: float = 600.0,
) -> Run:
    """Send ``messages`` (each followed by its probe) in windows, and attribute every refusal."""
    began = time.monotonic()
    outcomes = [Outcome(m) for m in messages]
    findings: list[Finding] = []
    restarts = 0
    with central._cond:
        cursor = len(central.answers)  # everything before it is attributed
    i = 0
    while i < len(messages):
        if time.monotonic() - began > budget_s:
            findings.append(Finding("time_budget", f"stopped after {i} of {len(messages)}"))
            break
        chunk = range(i, min(i + window, len(messages)))
        for k in chunk:
            central.publish(topic_of(messages[k]), messages[k].payload)
            central.publish(PROBE_TOPIC, probe_payload(k))
        last = chunk[-1]
        start = cursor
        central.wait(
            lambda last=last, start=start: central.probe_seen(last, start),
            answer_timeout_s,
            alive=lambda: daemon.alive,
        )
        with central._cond:
            arrived = central.answers[cursor:]
        k = chunk[0]
        for a in arrived:
            mid = a.msg_id
            if isinstance(mid, str) and mid.startswith("probe-"):
                n = int(mid.removeprefix("probe-"))
                if n < 0:  # a start-up probe (wait_online)
                    cursor += 1
                    continue
                if n != k:
                    findings.append(
                        Finding("out_of_order", f"probe {n} came while {k} was expected")
                    )
                    k = max(k, n)
                outcomes[k].handled = True
                k += 1
            elif k <= last:
                outcomes[k].answers.append(a)
            cursor += 1
        if k > last:
            i = last + 1
            continue
        # the daemon died, or stopped answering, with message k in hand
        culprit = messages[k]
        time.sleep(0.3)
        hung = daemon.alive
        code = daemon.returncode
        tail = error_lines(daemon.log_lines())[-6:]
        findings.append(
            Finding(
                "hang" if hung else "crash",
                (f"no answer within {answer_timeout_s:.0f} s" if hung else f"exit code {code}")
                + (": " + " | ".join(t[:300] for t in tail) if tail else ""),
                culprit,
            )
        )
        daemon.kill()
        with central._cond:
            cursor = len(central.answers)  # whatever the dead one still said is not counted
        daemon.start()
        restarts += 1
        wait_online(daemon, central)
        i = k + 1
    findings_all: list[Finding] = []
    notes: list[Finding] = []
    for o in outcomes:
        if not o.handled:
            continue
        found, noted = check_outcome(o)
        findings_all += found
        notes += noted
    return Run(outcomes, findings + findings_all, notes, restarts, time.monotonic() - began)


def wait_online(daemon: Daemon, central: Central, timeout: float = 30) -> None:
    """Until the daemon answers a probe: it runs, is connected and subscribed."""
    deadline = time.monotonic() + timeout
    n = -daemon.starts * 1000
    while time.monotonic() < deadline:
        if not daemon.alive:
            raise AssertionError(
                f"the gateway exited at start ({daemon.returncode}): "
                + " | ".join(error_lines(daemon.log_lines())[-5:])
            )
        start = len(central.answers)
        central.publish(PROBE_TOPIC, probe_payload(n))
        if central.wait(lambda n=n, start=start: central.probe_seen(n, start), 1.0):
            return
        n -= 1
    raise AssertionError("the gateway did not answer a probe within {timeout} s")


def latest_health(central: Central) -> dict[str, Any] | None:
    with central._cond:
        return central.health[-1] if central.health else None


def report(run: Run, path: Path) -> str:
    """Write the whole run as JSON to ``path``; a readable digest of the findings."""
    doc = {
        "summary": run.summary(),
        "findings": [f.as_dict() for f in run.findings],
        "notes": [f.as_dict() for f in run.notes],
    }
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    lines = [f"{len(run.findings)} findings (all of them in {path}):"]
    seen: set[tuple[str, str]] = set()
    for f in run.findings:
        key = (f.kind, f.message.kind if f.message else "")
        if key in seen:
            continue
        seen.add(key)
        where = ""
        if f.message is not None:
            r = f.message.repro()
            where = f" [{r['topic']} #{f.message.index} {r['message_kind']}] {r['payload'][:300]!r}"
        lines.append(f"- {f.kind}: {f.detail[:300]}{where}")
    return "\n".join(lines)
