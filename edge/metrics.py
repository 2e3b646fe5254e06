"""Prometheus text exposition of the gateway's health, served by the local API at ``/metrics``.

Only numbers a plant's monitoring acts on: is the writer alive and keeping up, is the outbox
draining, are the machine links up, how old is the oldest message central has not got. The
names follow Prometheus conventions (``_total`` for counters, base units in the name).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edge.engine import Engine

LINK_STATES = ("ok", "connecting", "down", "starting")


@dataclass(slots=True)
class MetricsSources:
    """What the metrics read besides the engine; the daemon fills it in as it wires things up."""

    links: Callable[[], dict[str, str]] = dict
    # Returns (sent, acked, refused, requeued, connected) of the MQTT uplink, when there is one.
    uplink: Callable[[], tuple[int, int, int, int, bool]] | None = None
    started_at: float = field(default_factory=time.time)


def _line(name: str, value: float | int, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str, lines: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]


async def render(engine: Engine, sources: MetricsSources) -> str:
    """The whole exposition; the outbox figures are read on the store's thread."""
    store = engine.store
    open_counts = await engine.run_store(store.outbox_open_counts)
    oldest_ms = await engine.run_store(store.outbox_oldest_ms)
    now = time.time()
    s = engine.stats
    out: list[str] = []
    out += _family(
        "edge_up",
        "gauge",
        "1 while the engine's writer runs.",
        [_line("edge_up", 0 if engine.stopped else 1)],
    )
    out += _family(
        "edge_store_healthy",
        "gauge",
        "0 after a failed commit until the next success.",
        [_line("edge_store_healthy", 1 if engine.healthy else 0)],
    )
    out += _family(
        "edge_start_time_seconds",
        "gauge",
        "When the daemon started (Unix time).",
        [_line("edge_start_time_seconds", round(sources.started_at, 3))],
    )
    counters = (
        ("edge_inputs_total", s.inputs, "Inputs applied to the core (accepted or rejected)."),
        ("edge_inputs_journaled_total", s.journaled, "Inputs journaled (they changed the state)."),
        ("edge_inputs_rejected_total", s.rejected, "Inputs the core refused."),
        ("edge_commits_total", s.commits, "SQLite transactions committed."),
        ("edge_commit_failures_total", s.commit_failures, "Commits that failed (disk full, I/O)."),
        ("edge_internal_errors_total", s.internal_errors, "Inputs that hit a bug in the core."),
    )
    for name, value, help_text in counters:
        out += _family(name, "counter", help_text, [_line(name, value)])
    out += _family(
        "edge_queue_depth",
        "gauge",
        "Inputs waiting for the writer.",
        [_line("edge_queue_depth", engine.queue_depth)],
    )
    out += _family(
        "edge_outbox_messages",
        "gauge",
        "Outbox messages not finished, by state.",
        [
            _line("edge_outbox_messages", open_counts.get(st, 0), {"state": st})
            for st in ("pending", "published")
        ],
    )
    age = 0.0 if oldest_ms is None else max(0.0, now - oldest_ms / 1000)
    out += _family(
        "edge_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest unfinished outbox message (0 when empty).",
        [_line("edge_outbox_oldest_age_seconds", round(age, 3))],
    )
    links = sources.links()
    out += _family(
        "edge_link_up",
        "gauge",
        "1 when a machine link reports ok.",
        [
            _line("edge_link_up", 1 if status == "ok" else 0, {"link": link})
            for link, status in sorted(links.items())
        ],
    )
    if sources.uplink is not None:
        sent, acked, refused, requeued, connected = sources.uplink()
        out += _family(
            "edge_mqtt_connected",
            "gauge",
            "1 while connected to the broker.",
            [_line("edge_mqtt_connected", 1 if connected else 0)],
        )
        for name, value, help_text in (
            ("edge_mqtt_sent_total", sent, "Messages published (QoS 1)."),
            ("edge_mqtt_acked_total", acked, "Publishes the broker acknowledged."),
            ("edge_mqtt_refused_total", refused, "Publishes the broker refused (PUBACK >= 0x80)."),
            ("edge_mqtt_requeued_total", requeued, "Confirmations sent again, relay silent."),
        ):
            out += _family(name, "counter", help_text, [_line(name, value)])
    wc = engine.wc
    out += _family(
        "edge_active_operations",
        "gauge",
        "Operations active at the work center.",
        [_line("edge_active_operations", len(wc.active))],
    )
    stop = wc.open_stop
    out += _family(
        "edge_stop_open",
        "gauge",
        "1 while a stop is open; reason=pending when unknown.",
        [
            _line(
                "edge_stop_open",
                1 if stop else 0,
                {"reason": (stop.reason or "pending") if stop else ""},
            )
        ],
    )
    out += _family(
        "edge_help_calls_open",
        "gauge",
        "Calls for help not yet closed.",
        [_line("edge_help_calls_open", len(wc.help_calls))],
    )
    return "\n".join(out) + "\n"
