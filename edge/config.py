"""The gateway's configuration: one TOML file, overridable by environment variables.

    cfg = load_config("/etc/edge-gateway/edge.toml")   # raises ConfigError, never a traceback
    rules = rules_from_config(cfg)                      # -> edge.domain.rules.WorkCenterRules

Sources, highest precedence first:

1. environment variables ``EDGE_<SECTION>__<KEY>``, e.g. ``EDGE_GATEWAY__EDGE_ID=wc-press-07`` or
   ``EDGE_STORE__PATH=/tmp/x.db``; a list or table takes JSON
   (``EDGE_MASTER_DATA__ALARM_REASONS='{"E101": "JAM"}'``); a table merges into the file's
   table key by key, a list replaces the file's list;
2. the TOML file (see ``config/example.toml`` for every key, its unit and default);
3. the defaults below.

Rules of the format, chosen for a file that a maintainer edits beside a machine:

- Every unknown key is an error, in the file and in ``EDGE_<SECTION>__<KEY>`` variables alike: a
  typo must never be silently ignored. (Plain ``EDGE_FOO`` variables without ``__`` are not
  checked, as other software may use that prefix.)
- Types are strict: ``max_batch = "1000"`` (a string) or ``authoritative = 1`` are errors in the
  file. Environment values are text, so they are converted first ("500" -> 500, "true" -> True).
- Every problem is reported at once, as ``(dotted.field.path, value, message)``; list entries are
  named by their ``name`` or ``code`` where that is unique (``counting.sources[press_good].kind``).
- ``counting.setup_scrap_reason`` and ``counting.machine_scrap_reason`` are the scrap reasons the
  gateway itself books; where ``master_data.scrap_reasons`` does not list them,
  :func:`rules_from_config` adds them to the catalogue (texts "Setup scrap" / "Machine scrap")
  rather than refusing to start: the friendlier of the two choices, and the core then always
  knows every reason it books.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from edge.domain import limits as L
from edge.domain.kpis import calendar_problem
from edge.domain.rules import (
    CURRENT_REVISION,
    HELP_CATEGORIES,
    BadgeHolder,
    ConfirmationPolicy,
    CountKind,
    CountSource,
    MasterData,
    ScrapReason,
    ServiceInterval,
    ServiceMeasure,
    Shift,
    SignalType,
    StopReason,
    WorkCenterRules,
    minute_of_day,
)
from edge.errors import MISSING, ConfigError, ConfigProblem
from edge.opcua_nodeid import parse_node_ref
from edge.pin import PinFormatError, PinHash
from edge.scanners.config import ScannerConfig

__all__ = [
    "ConfirmationsSection",
    "CountingSection",
    "EngineSection",
    "GatewayConfig",
    "GatewaySection",
    "MasterDataSection",
    "MqttSection",
    "OpcUaCounterEntry",
    "OpcUaSource",
    "OperationsSection",
    "ScrapReasonEntry",
    "ShiftEntry",
    "SourceEntry",
    "SourcesSection",
    "StopReasonEntry",
    "StopsSection",
    "StoreSection",
    "config_report",
    "load_config",
    "rules_from_config",
]

ENV_PREFIX: Final = "EDGE_"
ENV_DELIMITER: Final = "__"

_NAME_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
# Reason codes travel to the ERP; the core accepts at most 40 characters for a variance reason.
_CODE_PATTERN: Final = r"^[A-Za-z0-9_.:/-]{1,40}$"
_WORK_CENTER_PATTERN: Final = r"^[^/+#\x00-\x20\x7f]{1,64}$"
_PATTERN_TEXTS: Final = {
    _NAME_PATTERN: "should be 1-64 characters of A-Z a-z 0-9 _ . -",
    _CODE_PATTERN: "should be 1-40 characters of A-Z a-z 0-9 _ . : / -",
    _WORK_CENTER_PATTERN: "should be 1-64 characters, without spaces, '/', '+' or '#'",
}

Name = Annotated[str, Field(pattern=_NAME_PATTERN)]
Code = Annotated[str, Field(pattern=_CODE_PATTERN)]
Text = Annotated[str, Field(min_length=1, max_length=200)]

# -- problems raised from validators ------------------------------------------------------------

# (path below the validated object, offending value, message)
_SubProblem = tuple[tuple[str | int, ...], object, str]


def _problems(problems: Sequence[_SubProblem]) -> PydanticCustomError:
    """One pydantic error carrying several precisely located problems (expanded by load_config)."""
    summary = "; ".join(
        f"{'.'.join(str(p) for p in path)} = {value!r}: {msg}" for path, value, msg in problems
    )
    return PydanticCustomError(
        "edge_config", "{summary}", {"summary": summary, "problems": tuple(problems)}
    )


# -- sections -----------------------------------------------------------------------------------


class _Section(BaseModel):
    """Common settings: unknown keys are errors, types are strict, no inf/nan, immutable."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, frozen=True, str_strip_whitespace=True
    )


Section = _Section
"""The base of a configuration section (public for the relay's configuration)."""
M = TypeVar("M", bound=BaseModel)


class GatewaySection(_Section):
    """``[gateway]``: who this gateway is and how it logs."""

    edge_id: Name
    # ends up in MQTT topics: no '/', '+', '#', spaces or control characters
    work_center: Annotated[str, Field(pattern=_WORK_CENTER_PATTERN)]
    timezone: str = "UTC"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool | None = None  # None: JSON when stderr is not a terminal

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise PydanticCustomError(
                "timezone",
                "unknown time zone; use an IANA name such as 'Europe/Berlin' or 'UTC'",
            ) from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_json", mode="before")
    @classmethod
    def _auto_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value


class StoreSection(_Section):
    """``[store]``: the local SQLite database."""

    path: Annotated[Path, Field(strict=False)] = Path("/var/lib/edge-gateway/edge.db")
    synchronous: Literal["full", "normal"] = "full"

    @field_validator("synchronous", mode="before")
    @classmethod
    def _lower_sync(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class EngineSection(_Section):
    """``[engine]``: group commit and the timer tick."""

    batch_window_ms: Annotated[float, Field(ge=0, le=1000)] = 0.0
    max_batch: Annotated[int, Field(ge=1, le=100_000)] = 1000
    tick_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class RetentionSection(_Section):
    """``[retention]``: checkpoints of the projections, and how long old rows are kept."""

    enabled: bool = True
    checkpoint_interval_s: Annotated[float, Field(ge=60, le=7 * 86_400)] = 3600.0
    checkpoint_journal_rows: Annotated[int, Field(ge=0, le=10_000_000)] = 100_000
    journal_days: Annotated[float, Field(ge=1, le=3650)] = 90.0
    outbox_days: Annotated[float, Field(ge=1, le=3650)] = 30.0
    command_id_days: Annotated[float, Field(ge=1, le=3650)] = 7.0
    batch_rows: Annotated[int, Field(ge=100, le=50_000)] = 2000
    vacuum_pages: Annotated[int, Field(ge=16, le=65_536)] = 1024
    # What retention deletes is first appended to gzip JSON-lines files here (None: off).
    export_dir: Annotated[Path, Field(strict=False)] | None = None
    export_max_bytes: Annotated[int, Field(ge=1_048_576, le=4_294_967_296)] = 67_108_864
    export_keep_files: Annotated[int, Field(ge=1, le=10_000)] = 30
    # Disk watermark: below this free space (MB) machine counts are refused; 0: none.
    min_free_mb: Annotated[float, Field(ge=0, le=1_000_000)] = 256.0
    disk_check_s: Annotated[float, Field(ge=1, le=3600)] = 10.0
    # Finished operations, their confirmations and stops leave memory this many hours after
    # they ended (once nothing needs them there); their rows stay stored finished_days more.
    finished_in_memory_h: Annotated[float, Field(ge=24, le=8760)] = 72.0
    # ... and at most this many finished operations stay in memory (the oldest leave first).
    finished_in_memory_max: Annotated[int, Field(ge=10, le=100_000)] = 50
    finished_days: Annotated[float, Field(ge=1, le=3650)] = 365.0


class ReportSection(_Section):
    """``[report]``: the routing-drift review sent to central planning on a schedule."""

    # Every this many days the gateway sends the review of the last drift_days days on
    # _mes_v1/report/drift (0: never; `edge report drift` makes it by hand either way).
    drift_every_days: Annotated[float, Field(ge=0, le=366)] = 0.0
    drift_days: Annotated[int, Field(ge=1, le=3650)] = 90
    # Drift beyond this (percent, either way) is flagged; pairs with fewer completed operations
    # are listed, not flagged.
    drift_threshold_pct: Annotated[float, Field(gt=0, le=1000)] = 15.0
    drift_min_operations: Annotated[int, Field(ge=1, le=1_000_000)] = 3
    # "in-cycle": micro-stops count as run time in the actual cycle; "excluded": they do not.
    drift_micro_stops: Literal["in-cycle", "excluded"] = "in-cycle"
    # How often the gateway looks whether a review is due (seconds).
    drift_check_s: Annotated[float, Field(ge=1, le=86_400)] = 3600.0


_TOPIC_LEVEL: Final = r"^[^/+#\x00-\x20\x7f]{1,64}$"
_ROOT_PATTERN: Final = r"^[^+#\x00-\x20\x7f]+$"


class MqttSection(_Section):
    """``[mqtt]``: the central broker. Without ``enabled = true`` the gateway runs local-only."""

    enabled: bool = False
    host: Annotated[str, Field(min_length=1, max_length=255)] = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    # The work center's root topic; default umh/v1/<enterprise>/<site>/<area>/<line>/<work_center>
    root: Annotated[str, Field(pattern=_ROOT_PATTERN)] | None = None
    enterprise: Annotated[str, Field(pattern=_TOPIC_LEVEL)] = "enterprise"
    site: Annotated[str, Field(pattern=_TOPIC_LEVEL)] = "site"
    area: Annotated[str, Field(pattern=_TOPIC_LEVEL)] = "area"
    line: Annotated[str, Field(pattern=_TOPIC_LEVEL)] = "line"
    username: str | None = None
    password_file: Annotated[Path, Field(strict=False)] | None = None
    tls_ca_file: Annotated[Path, Field(strict=False)] | None = None
    tls_cert_file: Annotated[Path, Field(strict=False)] | None = None
    tls_key_file: Annotated[Path, Field(strict=False)] | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    session_expiry_s: Annotated[int, Field(ge=0, le=4_294_967_295)] = 7 * 24 * 3600
    reconnect_min_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 100
    health_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    result_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    historical_after_s: Annotated[float, Field(ge=0)] = 10.0
    max_inbound_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 256 * 1024
    # The counters' _historian values: at most one per counter and operation in this many
    # seconds, the latest winning and the last always sent (0: one per commit that changed it).
    historian_interval_s: Annotated[float, Field(ge=0, le=3600)] = 1.0

    @field_validator("root")
    @classmethod
    def _clean_root(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or value.endswith("/")):
            raise PydanticCustomError("root", "must not start or end with '/'")
        return value

    def root_for(self, work_center: str) -> str:
        if self.root:
            return self.root
        return f"umh/v1/{self.enterprise}/{self.site}/{self.area}/{self.line}/{work_center}"


class SourceEntry(_Section):
    """``[[counting.sources]]``: one counter of one machine signal source."""

    name: Name
    kind: Literal["good", "scrap", "total"]
    signal: Literal["absolute", "pulse"] = "absolute"
    bits: Literal[16, 32, 64] = 32
    authoritative: bool = True
    max_rate_per_s: Annotated[float, Field(gt=0)] | None = None
    # A cross-check warns when it and the authoritative source drift further apart than this.
    drift_tolerance: Annotated[int, Field(ge=0, le=1_000_000)] = 10


class CountingSection(_Section):
    """``[counting]``: plausibility, setup counts, scrap booking, and the count sources."""

    plausibility_factor: Annotated[float, Field(gt=0)] = 3.0
    plausibility_grace_s: Annotated[float, Field(ge=0)] = 10.0
    setup_counts_as: Literal["scrap", "good"] = "scrap"
    setup_scrap_reason: Code = "SETUP"
    machine_scrap_reason: Code = "MACHINE"
    operator_scrap_reduces_good: bool = True
    sources: list[SourceEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_counts(self) -> CountingSection:
        """Names are unique; one authoritative source per kind; not total and good both."""
        problems: list[_SubProblem] = []
        seen: dict[str, int] = {}
        authoritative: dict[str, tuple[int, str]] = {}
        for i, src in enumerate(self.sources):
            if src.name in seen:
                problems.append(
                    (
                        ("sources", i, "name"),
                        src.name,
                        f"duplicate source name (also used by sources.{seen[src.name]})",
                    )
                )
            seen.setdefault(src.name, i)
            if not src.authoritative:
                continue
            if src.kind in authoritative:
                _, other = authoritative[src.kind]
                problems.append(
                    (
                        ("sources", i, "authoritative"),
                        True,
                        f"sources {other!r} and {src.name!r} are both authoritative for "
                        f"{src.kind} counts and would both count; set authoritative = false "
                        "on one of them (it then serves as a cross-check)",
                    )
                )
                continue
            authoritative[src.kind] = (i, src.name)
        if "good" in authoritative and "total" in authoritative:
            (i_good, good), (i_total, total) = authoritative["good"], authoritative["total"]
            problems.append(
                (
                    ("sources", max(i_good, i_total), "authoritative"),
                    True,
                    f"source {good!r} (good) and source {total!r} (total) are both "
                    "authoritative: good parts would be counted twice (good = total - scrap); "
                    "set authoritative = false on one of them",
                )
            )
        if problems:
            raise _problems(problems)
        return self


def _node_ref(value: str) -> str:
    """A NodeId (``ns=``, ``nsu=``, ``i=``, ``s=``, ``g=``, ``b=``) or a browse path that
    parses (edge.opcua_nodeid); a namespace URI is resolved at each connect."""
    try:
        parse_node_ref(value)
    except ValueError as exc:
        raise PydanticCustomError("node_ref", str(exc)) from None
    return value


# A NodeId ("nsu=urn:acme:press;s=Press07.GoodCount", "ns=2;i=1001") or a browse path.
NodeRef = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_node_ref)]


class OpcUaCounterEntry(_Section):
    """``[[sources.opcua.counters]]``: one counter node feeding one ``[[counting.sources]]``."""

    counter: Name  # the name of an absolute counter in [[counting.sources]]
    node: NodeRef  # a NodeId ("ns=2;s=Press07.Counters.GoodCount") or a browse path


class OpcUaSource(_Section):
    """``[[sources.opcua]]``: one OPC UA server (one machine controller)."""

    name: Name
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://[^\s/]+(:[0-9]+)?(/.*)?$")]
    template: Literal["plain", "machinery", "packml", "weihenstephan", "euromap77"] = "plain"
    security_policy: Literal[
        "None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"
    ] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate_dir: Annotated[Path, Field(strict=False)] = Path("/var/lib/edge-gateway/pki")
    username: str | None = None
    password_file: Annotated[Path, Field(strict=False)] | None = None
    publishing_interval_ms: Annotated[float, Field(ge=0, le=60_000)] = 100.0
    # How often the server samples the nodes; 0: as fast as it can (every change). Default: 0.
    sampling_interval_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    watchdog_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    reconnect_min_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # How far the server's clock may disagree with ours before its timestamps are corrected
    # by the measured difference (logged once), seconds.
    max_clock_skew_s: Annotated[float, Field(ge=0.5, le=3600)] = 5.0
    counters: list[OpcUaCounterEntry] = Field(default_factory=list)
    state_node: NodeRef | None = None  # machine state, translated by the template
    mode_node: NodeRef | None = None  # operation mode (Machinery, EUROMAP): "setup" wins
    alarm_node: NodeRef | None = None  # the active alarm / stop code, empty when none
    # Extra or overriding translations of raw state values: "Execute" = "running", "6" = "running"
    state_map: dict[str, Literal["running", "idle", "down", "setup"]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _secure_pair(self) -> OpcUaSource:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise PydanticCustomError(
                "security",
                "security_policy and security_mode go together: both None, or a policy with "
                "Sign or SignAndEncrypt",
            )
        return self


# -- digital I/O: Modbus ------------------------------------------------------------------------


RegisterAddress = Annotated[int, Field(ge=0, le=65535)]
_RTU_ONLY: Final[tuple[str, ...]] = ("device", "baudrate", "parity", "stopbits", "bytesize")
_TCP_ONLY: Final[tuple[str, ...]] = ("host", "port")


class ModbusCounterEntry(_Section):
    """``[[sources.modbus.counters]]``: one counter register (or register pair) feeding one
    absolute ``[[counting.sources]]`` counter; its ``bits`` there (16, 32, 64) say how many
    registers it spans (1, 2, 4)."""

    counter: Name
    table: Literal["holding", "input"] = "holding"
    address: RegisterAddress  # 0-based protocol address (manuals' "40001" is holding 0)


class ModbusStateEntry(_Section):
    """``[sources.modbus.state]``: machine state from bits; precedence down > setup > running,
    and none of them set means idle."""

    table: Literal["discrete_inputs", "coils"] = "discrete_inputs"
    running: RegisterAddress | None = None
    down: RegisterAddress | None = None
    setup: RegisterAddress | None = None
    # Bits wired active-low (a normally-closed fault contact reads 0 when the machine is down,
    # so a broken wire shows as a fault).
    inverted: list[Literal["running", "down", "setup"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_bits(self) -> ModbusStateEntry:
        problems: list[_SubProblem] = []
        bits = {role: getattr(self, role) for role in ("running", "down", "setup")}
        given = {role: addr for role, addr in bits.items() if addr is not None}
        if not given:
            problems.append(
                (("running",), MISSING, "give the address of at least one of running, down, setup")
            )
        seen: dict[int, str] = {}
        for role, addr in given.items():
            if addr in seen:
                problems.append(
                    ((role,), addr, f"the same bit as {seen[addr]}; each role needs its own bit")
                )
            seen.setdefault(addr, role)
        for i, role in enumerate(self.inverted):
            if bits[role] is None:
                problems.append((("inverted", i), role, f"{role} has no bit address here"))
        if problems:
            raise _problems(problems)
        return self


class ModbusSource(_Section):
    """``[[sources.modbus]]``: one Modbus TCP or RTU I/O module (counters, state bits, coils)."""

    name: Name
    transport: Literal["tcp", "rtu"] = "tcp"
    # tcp
    host: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    # rtu; the Modbus serial line spec makes even parity the default (8E1)
    device: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    baudrate: Annotated[int, Field(ge=300, le=1_000_000)] = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    # 1-247 on a serial line (0 is broadcast, never answered); TCP modules take 0-255
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    poll_interval_ms: Annotated[float, Field(ge=10, le=60_000)] = 100.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    reconnect_min_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Of a counter spanning several registers: "big" = high word first, "little" = low first
    word_order: Literal["big", "little"] = "big"
    counters: list[ModbusCounterEntry] = Field(default_factory=list)
    state: ModbusStateEntry | None = None

    @field_validator("parity", mode="before")
    @classmethod
    def _upper_parity(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fits_transport(self) -> ModbusSource:
        problems: list[_SubProblem] = []
        given = self.model_fields_set
        if self.transport == "tcp":
            if self.host is None:
                problems.append((("host",), MISSING, "required with transport = 'tcp'"))
            wrong = [k for k in _RTU_ONLY if k in given]
        else:
            if self.device is None:
                problems.append(
                    (("device",), MISSING, "required with transport = 'rtu' (e.g. /dev/ttyUSB0)")
                )
            if not 1 <= self.unit_id <= 247:
                problems.append((("unit_id",), self.unit_id, "on a serial line a unit id is 1-247"))
            wrong = [k for k in _TCP_ONLY if k in given]
        # A serial setting on a TCP link (or the reverse) is a misunderstanding, not a no-op.
        for key in wrong:
            problems.append(
                ((key,), getattr(self, key), f"not used with transport = {self.transport!r}")
            )
        if self.reconnect_min_s > self.reconnect_max_s:
            problems.append(
                (("reconnect_min_s",), self.reconnect_min_s, "larger than reconnect_max_s")
            )
        if problems:
            raise _problems(problems)
        return self


# -- digital I/O: GPIO -------------------------------------------------------------------------

# The GPIO lines of the Raspberry Pi's 40-pin header, by BCM number (GPIO0 .. GPIO27).
GPIO_PINS: Final = range(28)
_GPIO_PIN_TEXT: Final = "should be a BCM GPIO number 0-27 (GPIO0-GPIO27 of the 40-pin header)"


def _gpio_pin(value: int) -> int:
    if value not in GPIO_PINS:
        raise PydanticCustomError("gpio_pin", _GPIO_PIN_TEXT)
    return value


class GpioInput(_Section):
    """One GPIO input: the pin, its pull resistor, the level that means "active", debounce."""

    pin: int
    # "up": idles high, a contact to ground activates it (the usual dry contact or NPN sensor);
    # "down": idles low (PNP sensor through a divider); "off": something else drives the line.
    pull: Literal["up", "down", "off"] = "up"
    # None: the opposite of the pull (up -> "low", down -> "high"); required with pull = "off".
    active: Literal["low", "high"] | None = None
    # An edge counts only after the line was quiet this long, so contact bounce counts once.
    bounce_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0

    @field_validator("pin")
    @classmethod
    def _valid_pin(cls, value: int) -> int:
        return _gpio_pin(value)

    @model_validator(mode="after")
    def _level_known(self) -> GpioInput:
        if self.pull == "off" and self.active is None:
            raise _problems([(("active",), MISSING, 'required with pull = "off": "low" or "high"')])
        return self

    @property
    def active_high(self) -> bool:
        if self.active is not None:
            return self.active == "high"
        return self.pull == "down"


class GpioSection(_Section):
    """``[gpio]``: the pin factory every GPIO user (counters, buttons, stack light) shares."""

    # "lgpio" (Raspberry Pi OS bookworm, Pi 5), "rpigpio" (RPi.GPIO), "native" (gpiozero's
    # own /dev/gpiomem driver), "mock" (no hardware: simulated pins for demos and tests).
    pin_factory: Literal["lgpio", "rpigpio", "native", "mock"] = "lgpio"


class GpioCounterEntry(GpioInput):
    """``[[sources.gpio.counters]]``: one input pin whose pulses feed one pulse counter."""

    counter: Name  # the name of a signal = "pulse" counter in [[counting.sources]]


class GpioSource(_Section):
    """``[[sources.gpio]]``: pulse counting on the gateway's own GPIO input pins."""

    name: Name
    # Pulses are handed to the engine this often (one input per counter with new pulses).
    batch_ms: Annotated[float, Field(ge=10, le=5000)] = 100.0
    counters: Annotated[list[GpioCounterEntry], Field(min_length=1)]


class SourcesSection(_Section):
    """``[sources]``: the machine links. Each adapter translates signals into inputs."""

    opcua: list[OpcUaSource] = Field(default_factory=list)
    modbus: list[ModbusSource] = Field(default_factory=list)
    gpio: list[GpioSource] = Field(default_factory=list)


# -- the operator side ---------------------------------------------------------------------------

ButtonAction = Literal[
    "start_setup",
    "start_production",
    "interrupt",
    "resume",
    "complete",
    "stop_reason_next",
    "stop_reason_confirm",
    "scrap_one",
    "call_help",
]
# Completing ends the order in the ERP: a button brushed in passing must never do it.
COMPLETE_MIN_LONG_PRESS_S: Final = 1.0


class ButtonEntry(GpioInput):
    """``[[operator.buttons]]``: one push button on a GPIO pin and the action it triggers."""

    name: Name  # the actor in events: "button:<name>"
    action: ButtonAction
    # 0: acts on press; > 0: acts once held this long (released earlier: nothing happens).
    long_press_s: Annotated[float, Field(ge=0, le=10)] = 0.0
    bounce_ms: Annotated[float, Field(ge=0, le=1000)] = 20.0
    category: Code | None = None  # call_help: what help (one of [andon].categories)
    reason: Code | None = None  # scrap_one: the scrap reason code booked

    @model_validator(mode="after")
    def _fits_action(self) -> ButtonEntry:
        problems: list[_SubProblem] = []
        if self.action == "complete" and self.long_press_s < COMPLETE_MIN_LONG_PRESS_S:
            problems.append(
                (
                    ("long_press_s",),
                    self.long_press_s,
                    f"a complete button needs a long press (long_press_s >= "
                    f"{COMPLETE_MIN_LONG_PRESS_S:g}), so that brushing it never completes an order",
                )
            )
        for key, action in (("category", "call_help"), ("reason", "scrap_one")):
            given = getattr(self, key)
            if self.action == action and given is None:
                problems.append(((key,), MISSING, f"required for action = {action!r}"))
            elif self.action != action and given is not None:
                problems.append(((key,), given, f"only for action = {action!r}"))
        if problems:
            raise _problems(problems)
        return self


STACKLIGHT_LAMPS: Final = ("green", "yellow", "red", "blue", "buzzer")


class StackLightEntry(_Section):
    """``[operator.stacklight]``: the andon lamp: its lamps on GPIO pins or Modbus coils."""

    output: Literal["gpio", "modbus"] = "gpio"
    modbus_source: Name | None = None  # output = "modbus": the [[sources.modbus]] module
    # Each lamp: a GPIO pin (BCM) or a coil address; a lamp left out is not wired.
    green: Annotated[int, Field(ge=0, le=65535)] | None = None
    yellow: Annotated[int, Field(ge=0, le=65535)] | None = None
    red: Annotated[int, Field(ge=0, le=65535)] | None = None
    blue: Annotated[int, Field(ge=0, le=65535)] | None = None
    buzzer: Annotated[int, Field(ge=0, le=65535)] | None = None
    active: Literal["high", "low"] = "high"  # gpio: "low" for relay boards that switch on low
    blink_s: Annotated[float, Field(ge=0.1, le=5)] = 0.5  # on and off time of a blinking lamp
    buzzer_s: Annotated[float, Field(ge=0, le=600)] = 3.0  # per new stop or call; 0: silent
    lamp_test_s: Annotated[float, Field(ge=0, le=10)] = 1.0  # every lamp on at start; 0: none
    # How an order shows on the lamps (none, blink_green, blink_yellow, yellow): a running
    # operation that reached its target quantity, and one past its over-delivery tolerance
    # that nobody acknowledged yet.
    target_reached: Literal["none", "blink_green", "blink_yellow", "yellow"] = "blink_green"
    over_tolerance: Literal["none", "blink_green", "blink_yellow", "yellow"] = "blink_yellow"
    # A maintenance interval that fell due (``[[service]]``), until it is done.
    maintenance_due: Literal["none", "blink_green", "blink_yellow", "yellow"] = "yellow"

    @property
    def lamps(self) -> dict[str, int]:
        """The wired lamps: name -> pin or coil address."""
        wired = {name: getattr(self, name) for name in STACKLIGHT_LAMPS}
        return {name: where for name, where in wired.items() if where is not None}

    @model_validator(mode="after")
    def _wired(self) -> StackLightEntry:
        problems: list[_SubProblem] = []
        lamps = self.lamps
        if not lamps:
            problems.append(
                (
                    ("green",),
                    MISSING,
                    "no lamp is wired: give at least one of green, yellow, red, blue, buzzer",
                )
            )
        seen: dict[int, str] = {}
        for name, where in lamps.items():
            if self.output == "gpio" and where not in GPIO_PINS:
                problems.append(((name,), where, _GPIO_PIN_TEXT))
            elif where in seen:
                problems.append(((name,), where, f"the {seen[where]} lamp is wired there too"))
            seen.setdefault(where, name)
        if self.output == "modbus" and self.modbus_source is None:
            problems.append((("modbus_source",), MISSING, 'required with output = "modbus"'))
        if self.output == "gpio" and self.modbus_source is not None:
            problems.append((("modbus_source",), self.modbus_source, 'only with output = "modbus"'))
        if problems:
            raise _problems(problems)
        return self


class OperatorSection(_Section):
    """``[operator]``: physical buttons and the stack light beside the machine."""

    buttons: list[ButtonEntry] = Field(default_factory=list)
    stacklight: StackLightEntry | None = None

    @model_validator(mode="after")
    def _distinct_buttons(self) -> OperatorSection:
        problems: list[_SubProblem] = []
        first: dict[str, int] = {}
        for i, button in enumerate(self.buttons):
            if button.name in first:
                problems.append(
                    (
                        ("buttons", i, "name"),
                        button.name,
                        f"duplicate button name (also buttons.{first[button.name]})",
                    )
                )
            first.setdefault(button.name, i)
        if problems:
            raise _problems(problems)
        return self


class AndonSection(_Section):
    """``[andon]``: calls for help (rules.md §8)."""

    categories: Annotated[list[Code], Field(min_length=1, max_length=20)] = Field(
        default_factory=lambda: list(HELP_CATEGORIES)
    )
    # An unacknowledged call escalates (a second event to central) after this long; 0: never.
    escalate_after_s: Annotated[float, Field(ge=0, le=86_400)] = 300.0


class PanelSection(_Section):
    """``[panel]``: the operator touch panel and the local API the daemon serves.

    The supervisor PIN is stored only as a hash (``edge panel-pin`` makes one): either one shared
    PIN (``supervisor_pin_hash``, acting as ``supervisor:<supervisor_id>``) or a file of
    ``<id> <hash>`` lines, one per supervisor, so every action names the person.
    """

    enabled: bool = False
    # Loopback by default: the kiosk browser runs on the same device. "0.0.0.0" for the plant LAN.
    host: Annotated[str, Field(min_length=1, max_length=255)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080  # 0: any free port (tests)
    language: Literal["en", "de"] = "en"
    operator_id: Name = "panel"  # panel taps act as operator:<operator_id>
    supervisor_id: Name = "panel"
    # "scrypt$..." from `edge panel-pin`; kept out of repr() so it never lands in a log line
    supervisor_pin_hash: Annotated[str | None, Field(repr=False)] = None
    supervisor_pin_file: Annotated[Path, Field(strict=False)] | None = None
    pin_max_failures: Annotated[int, Field(ge=1, le=20)] = 3  # wrong PINs before a lockout
    # wrong PINs from all clients together before every client is locked (see edge/panel/auth.py)
    pin_max_failures_global: Annotated[int, Field(ge=1, le=1000)] = 10
    pin_lockout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0  # doubles with each lockout
    pin_lockout_max_s: Annotated[float, Field(gt=0, le=86_400)] = 900.0
    supervisor_session_s: Annotated[float, Field(gt=0, le=3600)] = 120.0  # idle time to log out
    variance_reasons: Annotated[list[Code], Field(min_length=1, max_length=20)] = Field(
        default_factory=lambda: ["MATERIAL", "QUALITY", "MACHINE", "PLANNING", "OTHER"]
    )
    bind_retry_s: Annotated[float, Field(gt=0, le=600)] = 5.0  # address busy: try again after
    # a larger request body is refused (413) before it is read; commands are well below 1 KiB
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 64 * 1024

    @field_validator("supervisor_pin_hash")
    @classmethod
    def _pin_hash(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                PinHash.parse(value)
            except PinFormatError as exc:
                raise PydanticCustomError("pin_hash", str(exc)) from None
        return value


class OperationsSection(_Section):
    """``[operations]``: how operations run at this work center (rules.md §1, §2)."""

    family_tool: bool = False
    auto_complete_at_target: bool = False


class StopsSection(_Section):
    """``[stops]``: stop detection (rules.md §4)."""

    no_count_factor: Annotated[float, Field(gt=0)] = 3.0
    micro_stop_s: Annotated[float, Field(ge=0)] = 120.0


class ConfirmationsSection(_Section):
    """``[confirmations]``: the partial confirmation policy and cycle variance (rules.md §6)."""

    every_good: Annotated[Decimal, Field(gt=0, strict=False)] | None = None
    every_minutes: Annotated[float, Field(gt=0)] | None = None
    at_shift_end: bool = False
    variance_threshold: Annotated[float, Field(ge=0)] = 0.25
    variance_reason: Code = "CYCLE"

    @field_validator("every_good", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        if isinstance(value, bool):  # lax Decimal would take true as 1
            raise PydanticCustomError("decimal_type", "Input should be a number")
        return value


def _minute_of_day(value: str, *, allow_24: bool) -> int:
    try:
        return minute_of_day(value, allow_24=allow_24)
    except ValueError:
        raise PydanticCustomError(
            "time_of_day", 'should be a local time of day "HH:MM" (00:00 to 23:59)'
        ) from None


def _time_to_text(value: object) -> object:
    """A TOML time literal (``start = 06:00:00``) is as good as the string "06:00"."""
    if isinstance(value, dt.time):
        if value.second or value.microsecond:
            raise PydanticCustomError("time_of_day", "shifts start and end on a whole minute")
        return value.strftime("%H:%M")
    return value


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _LocalSpan(_Section):
    """A named span of local time of day, "HH:MM" to "HH:MM" (a TOML time literal too)."""

    name: Name
    start: str
    end: str

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_literal(cls, value: object) -> object:
        return _time_to_text(value)

    @field_validator("start")
    @classmethod
    def _valid_start(cls, value: str) -> str:
        _minute_of_day(value, allow_24=False)
        return value

    @field_validator("end")
    @classmethod
    def _valid_end(cls, value: str) -> str:
        _minute_of_day(value, allow_24=True)  # "24:00" = midnight at the end of the day
        return value


class BreakEntry(_LocalSpan):
    """``[[shifts.breaks]]``: a planned break inside its shift, by local start and end."""


class BadgeEntry(_Section):
    """``[[badges]]``: an operator who logs in at this work center by badge."""

    # What the scanner reads (after the [scanner] badge pattern took the id out of the scan).
    badge: Annotated[str, Field(pattern=r"^[!-~]{1,64}$")]
    # The personnel number labour is booked to (SAP Personnel: at most 8 characters).
    personnel: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,20}$")]
    name: Annotated[str, Field(max_length=100)] = ""


class MachineSection(_Section):
    """``[machine]``: machine hours, starts, cycles and parts for maintenance."""

    hours: bool = True  # count them (edge.domain.machine); false: nothing counted or published


class ServiceEntry(_Section):
    """``[[service]]``: a maintenance task due every ``every`` hours (of running), starts,
    cycles or parts since it was last done."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    measure: Literal["hours", "starts", "cycles", "parts"]
    every: Annotated[Decimal, Field(gt=0, max_digits=19, decimal_places=3, strict=False)]
    text: Annotated[str, Field(max_length=L.MAX_TEXT)] = ""

    @field_validator("every", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise PydanticCustomError("decimal_type", "Input should be a number")
        return value

    @model_validator(mode="after")
    def _bounded(self) -> ServiceEntry:
        most = L.MAX_SERVICE_HOURS if self.measure == "hours" else L.MAX_SERVICE_COUNT
        if self.every > most:
            raise ValueError(f"every = {self.every}: at most {most} {self.measure}")
        if self.measure != "hours" and self.every != self.every.to_integral_value():
            raise ValueError(f"every = {self.every}: {self.measure} are whole numbers")
        return self


class MaterialSection(_Section):
    """``[material]``: how components are consumed (edge.domain.material)."""

    # Backflushed components are consumed for scrap and rework too, not only for the yield.
    backflush_scrap: bool = True


class ShiftEntry(_LocalSpan):
    """``[[shifts]]``: a shift by local start and end time; end <= start runs past midnight."""

    # The weekdays the shift starts on (a night shift Friday 22:00 to Saturday 06:00: "fri").
    weekdays: Annotated[list[Weekday], Field(min_length=1, max_length=7)] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    breaks: Annotated[list[BreakEntry], Field(max_length=10)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _breaks_inside(self) -> ShiftEntry:
        try:
            self.to_domain()
        except ValueError as exc:
            raise _problems([(("breaks",), [b.name for b in self.breaks], str(exc))]) from None
        return self

    @property
    def start_minute(self) -> int:
        return _minute_of_day(self.start, allow_24=False)

    @property
    def length_minutes(self) -> int:
        """end - start; 0 (end == start) is a whole day, negative runs past midnight."""
        return self.to_domain().length_minutes

    def to_domain(self) -> Shift:
        return Shift.parse(
            self.name,
            self.start,
            self.end,
            list(self.weekdays),
            [(b.name, b.start, b.end) for b in self.breaks],
        )


class PlannedDowntimeEntry(_Section):
    """``[[calendar.planned_downtime]]``: planned downtime by the clock (maintenance, a
    stocktake, no orders), local time of the gateway's time zone unless it carries an offset."""

    start: dt.datetime
    end: dt.datetime
    reason: Text = "planned"

    @model_validator(mode="after")
    def _end_after_start(self) -> PlannedDowntimeEntry:
        if (self.start.tzinfo is None) != (self.end.tzinfo is None):
            raise _problems([(("end",), str(self.end), "both or neither with a UTC offset")])
        if self.end <= self.start:
            raise _problems([(("end",), str(self.end), "must be after start")])
        return self


class CalendarSection(_Section):
    """``[calendar]``: the shift calendar's days off and planned downtime (the shifts
    themselves are ``[[shifts]]``), for the ISO 22400 KPIs."""

    holidays: Annotated[list[dt.date], Field(max_length=1000)] = Field(default_factory=list)
    planned_downtime: Annotated[list[PlannedDowntimeEntry], Field(max_length=1000)] = Field(
        default_factory=list
    )

    @field_validator("holidays", mode="before")
    @classmethod
    def _dates_not_times(cls, value: object) -> object:
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dt.datetime):
                    raise PydanticCustomError("date_type", "holidays are dates, not date-times")
        return value


class StopReasonEntry(_Section):
    """``[[master_data.stop_reasons]]``."""

    code: Code
    text: Text
    category: Literal["planned", "unplanned"] = "unplanned"


class ScrapReasonEntry(_Section):
    """``[[master_data.scrap_reasons]]``."""

    code: Code
    text: Text


class MasterDataSection(_Section):
    """``[master_data]``: reason catalogues used until central sends its own master data."""

    crew_size: Annotated[Decimal, Field(gt=0, le=1000, strict=False)] = Decimal(1)
    stop_reasons: list[StopReasonEntry] = Field(default_factory=list)
    scrap_reasons: list[ScrapReasonEntry] = Field(default_factory=list)
    alarm_reasons: dict[Annotated[str, Field(min_length=1, max_length=64)], str] = Field(
        default_factory=dict
    )

    @field_validator("crew_size", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise PydanticCustomError("decimal_type", "Input should be a number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MasterDataSection:
        problems: list[_SubProblem] = []
        for field, codes in (
            ("stop_reasons", [r.code for r in self.stop_reasons]),
            ("scrap_reasons", [r.code for r in self.scrap_reasons]),
        ):
            first: dict[str, int] = {}
            for i, code in enumerate(codes):
                if code in first:
                    problems.append(
                        (
                            (field, i, "code"),
                            code,
                            f"duplicate reason code (also {field}.{first[code]})",
                        )
                    )
                first.setdefault(code, i)
        known = [r.code for r in self.stop_reasons]
        for alarm, reason in self.alarm_reasons.items():
            if reason not in known:
                listed = ", ".join(known) if known else "none are configured"
                problems.append(
                    (
                        ("alarm_reasons", alarm),
                        reason,
                        f"alarm {alarm!r} maps to stop reason {reason!r}, which is not in "
                        f"master_data.stop_reasons (known: {listed})",
                    )
                )
        if problems:
            raise _problems(problems)
        return self


def _default_shifts() -> list[ShiftEntry]:
    return [ShiftEntry(name="day", start="00:00", end="00:00")]


# -- environment and file sources ---------------------------------------------------------------

# Set by load_config for the duration of one construction: the TOML data and the environment.
_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("edge_config_file", default=None)
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("edge_config_env", default=None)


class _EnvSource(EnvSettingsSource):
    """EnvSettingsSource reading the mapping given to load_config (else os.environ).

    Values are converted from text to the field's type here (leniently: "500" -> 500), so that
    the models can stay strict for the TOML file.
    """

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRON.get()
        if env is None:
            return super()._load_env_vars()
        return {k.lower(): v for k, v in env.items()}

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        return _coerce_text(data, self.settings_cls.model_fields)


def _coerce_text(data: dict[str, Any], fields: Mapping[str, FieldInfo]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            out[key] = value  # unknown key: left for extra="forbid" to report
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(value, dict):
            out[key] = _coerce_text(value, ann.model_fields)
        elif isinstance(value, str) and ann is not None:
            try:
                out[key] = TypeAdapter(ann).validate_python(value)
            except ValidationError:
                out[key] = value  # let the strict model report it against the original text
        else:
            out[key] = value
    return out


class _FileSource(PydanticBaseSettingsSource):
    """The parsed TOML file given to load_config."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        data = _FILE_DATA.get() or {}
        return data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


# -- the configuration --------------------------------------------------------------------------


class GatewayConfig(BaseSettings):
    """The whole gateway configuration, one attribute per TOML section.

    Build it with :func:`load_config`. Constructed directly, keyword arguments take the place of
    the file and ``os.environ`` still overrides them.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        validate_default=False,
    )

    gateway: GatewaySection
    store: StoreSection = Field(default_factory=StoreSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    mqtt: MqttSection = Field(default_factory=MqttSection)
    sources: SourcesSection = Field(default_factory=SourcesSection)
    counting: CountingSection = Field(default_factory=CountingSection)
    operations: OperationsSection = Field(default_factory=OperationsSection)
    stops: StopsSection = Field(default_factory=StopsSection)
    confirmations: ConfirmationsSection = Field(default_factory=ConfirmationsSection)
    shifts: Annotated[list[ShiftEntry], Field(min_length=1)] = Field(
        default_factory=_default_shifts
    )
    calendar: CalendarSection = Field(default_factory=CalendarSection)
    master_data: MasterDataSection = Field(default_factory=MasterDataSection)
    gpio: GpioSection = Field(default_factory=GpioSection)
    operator: OperatorSection = Field(default_factory=OperatorSection)
    andon: AndonSection = Field(default_factory=AndonSection)
    panel: PanelSection = Field(default_factory=PanelSection)
    report: ReportSection = Field(default_factory=ReportSection)
    scanner: ScannerConfig = Field(default_factory=ScannerConfig)
    badges: Annotated[list[BadgeEntry], Field(max_length=10_000)] = Field(default_factory=list)
    machine: MachineSection = Field(default_factory=MachineSection)
    service: Annotated[list[ServiceEntry], Field(max_length=L.MAX_SERVICE_INTERVALS)] = Field(
        default_factory=list
    )
    material: MaterialSection = Field(default_factory=MaterialSection)

    @field_validator("service")
    @classmethod
    def _one_interval_each(cls, service: list[ServiceEntry]) -> list[ServiceEntry]:
        seen: set[str] = set()
        for entry in service:
            if entry.name in seen:
                raise ValueError(f"name {entry.name!r} is listed twice")
            seen.add(entry.name)
        return service

    @field_validator("badges")
    @classmethod
    def _one_holder_each(cls, badges: list[BadgeEntry]) -> list[BadgeEntry]:
        for what in ("badge", "personnel"):
            seen: set[str] = set()
            for entry in badges:
                value = getattr(entry, what)
                if value in seen:
                    raise ValueError(f"{what} {value!r} is listed twice")
                seen.add(value)
        return badges

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # first wins: environment, then keyword arguments, then the TOML file given to load_config
        return _EnvSource(settings_cls), init_settings, _FileSource(settings_cls)

    @model_validator(mode="after")
    def _links_name_counters(self) -> GatewayConfig:
        absolute = {s.name for s in self.counting.sources if s.signal == "absolute"}
        problems: list[_SubProblem] = []
        names: set[str] = set()
        for i, src in enumerate(self.sources.opcua):
            if src.name in names:
                problems.append((("sources", "opcua", i, "name"), src.name, "duplicate name"))
            names.add(src.name)
            for j, entry in enumerate(src.counters):
                if entry.counter not in absolute:
                    problems.append(
                        (
                            ("sources", "opcua", i, "counters", j, "counter"),
                            entry.counter,
                            "not an absolute counter in [[counting.sources]]",
                        )
                    )
        if problems:
            raise _problems(problems)
        return self

    @model_validator(mode="after")
    def _modbus_links(self) -> GatewayConfig:
        """Modbus counters name absolute counters, each fed once, in registers that exist."""
        bits = {s.name: s.bits for s in self.counting.sources if s.signal == "absolute"}
        fed = {
            e.counter: "an [[sources.opcua]] link" for s in self.sources.opcua for e in s.counters
        }
        problems: list[_SubProblem] = []
        names: set[str] = set()
        devices: dict[str, str] = {}
        for i, src in enumerate(self.sources.modbus):
            where: tuple[str | int, ...] = ("sources", "modbus", i)
            if src.name in names:
                problems.append(((*where, "name"), src.name, "duplicate name"))
            names.add(src.name)
            if src.transport == "rtu" and src.device is not None:
                if src.device in devices:
                    problems.append(
                        (
                            (*where, "device"),
                            src.device,
                            f"already opened by modbus source {devices[src.device]!r}; "
                            "one source per serial port",
                        )
                    )
                devices.setdefault(src.device, src.name)
            used: dict[tuple[str, int], str] = {}  # (table, register) -> counter
            for j, entry in enumerate(src.counters):
                at = (*where, "counters", j)
                if entry.counter not in bits:
                    problems.append(
                        (
                            (*at, "counter"),
                            entry.counter,
                            "not an absolute counter in [[counting.sources]]",
                        )
                    )
                    continue
                if entry.counter in fed:
                    problems.append(
                        (
                            (*at, "counter"),
                            entry.counter,
                            f"already read by {fed[entry.counter]}; both would count",
                        )
                    )
                fed.setdefault(entry.counter, f"modbus source {src.name!r}")
                words = bits[entry.counter] // 16
                if entry.address + words > 65536:
                    problems.append(
                        (
                            (*at, "address"),
                            entry.address,
                            f"a {bits[entry.counter]}-bit counter spans {words} registers; "
                            "the last register address is 65535",
                        )
                    )
                    continue
                for reg in range(entry.address, entry.address + words):
                    other = used.get((entry.table, reg))
                    if other is not None:
                        problems.append(
                            (
                                (*at, "address"),
                                entry.address,
                                f"{entry.table} register {reg} is also read for counter {other!r}",
                            )
                        )
                        break
                    used[(entry.table, reg)] = entry.counter
        if problems:
            raise _problems(problems)
        return self

    @model_validator(mode="after")
    def _gpio_links(self) -> GatewayConfig:
        """GPIO counters feed pulse counters, once each; no pin serves two purposes; buttons
        call for help in a known category; a Modbus stack light names a Modbus module."""
        kinds = {s.name: s.signal for s in self.counting.sources}
        problems: list[_SubProblem] = []
        pins: dict[int, str] = {}

        def claim(pin: int, path: tuple[str | int, ...], what: str) -> None:
            if pin in pins:
                problems.append((path, pin, f"GPIO pin {pin} is already used by {pins[pin]}"))
            pins.setdefault(pin, what)

        names: set[str] = set()
        fed: dict[str, str] = {}
        for i, src in enumerate(self.sources.gpio):
            if src.name in names:
                problems.append((("sources", "gpio", i, "name"), src.name, "duplicate name"))
            names.add(src.name)
            for j, entry in enumerate(src.counters):
                at: tuple[str | int, ...] = ("sources", "gpio", i, "counters", j)
                kind = kinds.get(entry.counter)
                if kind is None:
                    problems.append(
                        (
                            (*at, "counter"),
                            entry.counter,
                            'not a counter in [[counting.sources]] (one with signal = "pulse")',
                        )
                    )
                elif kind != "pulse":
                    problems.append(
                        (
                            (*at, "counter"),
                            entry.counter,
                            f"a GPIO pin counts pulses, but counter {entry.counter!r} has "
                            f'signal = {kind!r}; set signal = "pulse" there',
                        )
                    )
                elif entry.counter in fed:
                    problems.append(
                        (
                            (*at, "counter"),
                            entry.counter,
                            f"already fed by {fed[entry.counter]}: it would count twice",
                        )
                    )
                fed.setdefault(entry.counter, f"GPIO pin {entry.pin}")
                claim(entry.pin, (*at, "pin"), f"counter {entry.counter!r} of [[sources.gpio]]")
        categories = self.andon.categories
        for i, button in enumerate(self.operator.buttons):
            at = ("operator", "buttons", i)
            claim(button.pin, (*at, "pin"), f"button {button.name!r}")
            if button.category is not None and button.category not in categories:
                problems.append(
                    (
                        (*at, "category"),
                        button.category,
                        f"not one of [andon].categories ({', '.join(categories)})",
                    )
                )
        light = self.operator.stacklight
        if light is not None and light.output == "gpio":
            for lamp, pin in light.lamps.items():
                claim(pin, ("operator", "stacklight", lamp), f"the stack light's {lamp} lamp")
        if light is not None and light.modbus_source is not None:
            modbus = [m.name for m in self.sources.modbus]
            if light.modbus_source not in modbus:
                problems.append(
                    (
                        ("operator", "stacklight", "modbus_source"),
                        light.modbus_source,
                        "not a [[sources.modbus]] name"
                        + (f" (known: {', '.join(modbus)})" if modbus else " (none is configured)"),
                    )
                )
        if problems:
            raise _problems(problems)
        return self

    @field_validator("shifts")
    @classmethod
    def _distinct_shifts(cls, shifts: list[ShiftEntry]) -> list[ShiftEntry]:
        problems: list[_SubProblem] = []
        names: dict[str, int] = {}
        for i, shift in enumerate(shifts):
            if shift.name in names:
                problems.append(
                    (
                        (i, "name"),
                        shift.name,
                        f"duplicate shift name (also shifts.{names[shift.name]})",
                    )
                )
            names.setdefault(shift.name, i)
            for other in shifts[:i]:
                if other.start_minute == shift.start_minute and set(other.weekdays) & set(
                    shift.weekdays
                ):
                    problems.append(
                        (
                            (i, "start"),
                            shift.start,
                            f"shift {other.name!r} starts at the same time on the same day",
                        )
                    )
                    break
        if not problems:
            why = calendar_problem(tuple(s.to_domain() for s in shifts), "UTC")
            if why is not None:
                problems.append(((), [s.name for s in shifts], why))
        if problems:
            raise _problems(problems)
        return shifts


# -- loading ------------------------------------------------------------------------------------

_SECRETISH: Final = re.compile(r"(?i)pass|secret|token|pin|private|key")
_AT_LINE: Final = re.compile(r"at line (\d+), column (\d+)")


DEFAULT_CONFIG_PATH: Final = Path("/etc/edge-gateway/edge.toml")


def config_path(given: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The config file a command reads: ``-c FILE`` when given, else ``$EDGE_CONFIG``, else
    :data:`DEFAULT_CONFIG_PATH`."""
    environ = os.environ if env is None else env
    return Path(given or environ.get("EDGE_CONFIG") or DEFAULT_CONFIG_PATH)


def file_problems(cfg: GatewayConfig) -> list[tuple[str, object, str]]:
    """Every file the config names that the gateway could not use, as (key, path, why): one
    that is missing, not a file, unreadable, or (TLS) not what the TLS library can load. A path
    is not a secret, so it is shown; a file's contents never are. ``edge check-config`` and
    ``edge run`` refuse such a config (exit 2), instead of a traceback at the first connect."""
    problems: list[tuple[str, object, str]] = []

    def usable(key: str, path: Path | None) -> bool:
        if path is None:
            return False
        if not path.exists():
            problems.append((key, str(path), "no such file"))
        elif not path.is_file():
            problems.append((key, str(path), "is not a file"))
        elif not os.access(path, os.R_OK):
            problems.append((key, str(path), "cannot be read (permissions)"))
        else:
            return True
        return False

    m = cfg.mqtt
    if m.enabled:
        usable("mqtt.password_file", m.password_file)
        ca = usable("mqtt.tls_ca_file", m.tls_ca_file)
        cert = usable("mqtt.tls_cert_file", m.tls_cert_file)
        key = usable("mqtt.tls_key_file", m.tls_key_file)
        problems.extend(_tls_problems(m, ca, cert, key or m.tls_key_file is None))
    for link in cfg.sources.opcua:
        usable(f"sources.opcua[{link.name}].password_file", link.password_file)
    if cfg.panel.enabled:
        usable("panel.supervisor_pin_file", cfg.panel.supervisor_pin_file)
    return problems


def _tls_problems(m: MqttSection, ca: bool, cert: bool, key: bool) -> list[tuple[str, object, str]]:
    """What the TLS library says of the files that are there (the same calls the link makes)."""
    import ssl

    out: list[tuple[str, object, str]] = []
    if ca and m.tls_ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(m.tls_ca_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            out.append(("mqtt.tls_ca_file", str(m.tls_ca_file), f"not a CA certificate: {exc}"))
    if cert and key and m.tls_cert_file is not None:
        context = ssl.create_default_context()
        key_file = m.tls_key_file or m.tls_cert_file
        try:
            context.load_cert_chain(str(m.tls_cert_file), str(key_file))
        except (ssl.SSLError, OSError, ValueError) as exc:
            out.append(
                (
                    "mqtt.tls_cert_file",
                    str(m.tls_cert_file),
                    f"the certificate and key {key_file} do not load together: {exc}",
                )
            )
    return out


def mqtt_password(cfg: GatewayConfig) -> str | None:
    """The broker password, read from ``[mqtt] password_file`` (None without one); a file that
    cannot be read is a config error naming the key and the path, never the contents."""
    path = cfg.mqtt.password_file
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            [("mqtt.password_file", str(path), f"cannot be read: {exc.strerror}")]
        ) from None


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, merge and validate the configuration; every problem becomes one ConfigError.

    `path` is the TOML file (None: no file, only environment and defaults); `env` replaces
    ``os.environ`` as the source of ``EDGE_<SECTION>__<KEY>`` overrides when given.
    """
    source = str(path) if path is not None else "environment"
    data: dict[str, Any] = _read_toml(Path(path)) if path is not None else {}
    environ: Mapping[str, str] = os.environ if env is None else env
    unknown = _unknown_env_sections(environ)
    file_token = _FILE_DATA.set(data)
    env_token = _ENVIRON.set(environ)
    try:
        cfg = GatewayConfig()
    except ValidationError as exc:
        # list entries are labelled from what was validated: the file with the environment on top
        merged = _deep_merge(data, _EnvSource(GatewayConfig)())
        problems = _translate(exc, merged, environ)
        raise ConfigError([*unknown, *problems], source=source) from None
    except SettingsError as exc:  # e.g. a list or table in an EDGE_ variable that is not JSON
        raise ConfigError([*unknown, *_env_json_problems(exc, environ)], source=source) from None
    finally:
        _FILE_DATA.reset(file_token)
        _ENVIRON.reset(env_token)
    if unknown:
        raise ConfigError(unknown, source=source)
    return cfg


def load_model(model: type[M], path: str | Path) -> M:
    """Read a TOML file into ``model``, a strict model of :class:`Section` parts, with the same
    rules and reports as the gateway's file (for configurations without environment
    overrides: the ERP relay's)."""
    data = _read_toml(Path(path))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_translate(exc, data, {}), source=str(path)) from None


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            out[key] = _deep_merge(below, value)
        else:
            out[key] = value
    return out


def config_report(err: ConfigError) -> str:
    """The text to show the maintainer: the file, then one line per problem (secrets redacted).

    invalid configuration in /etc/edge-gateway/edge.toml (2 problems):
      counting.sources[press_good].kind = 'tota': Input should be 'good', 'scrap' or 'total'
      gateway.timezone = 'Europe/Berlim': unknown time zone; use an IANA name ...
    """
    return str(err)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([("file", str(path), "no such file")], source=str(path)) from None
    except IsADirectoryError:
        raise ConfigError(
            [("file", str(path), "is a directory, not a TOML file")], source=str(path)
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [("file", str(path), f"cannot be read: {reason}")], source=str(path)
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [(f"line {line}", MISSING, "not UTF-8 text (TOML files are UTF-8)")], source=str(path)
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc, text)], source=str(path)) from None


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str) -> ConfigProblem:
    message = f"TOML syntax error: {exc}"
    at = _AT_LINE.search(str(exc))
    if at is None:
        return ConfigProblem("file", MISSING, message)
    number = int(at[1])
    lines = text.splitlines()
    line = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    # a broken line may hold a secret: show it only if it does not look like one
    shown: object = MISSING if (not line or _SECRETISH.search(line)) else line
    return ConfigProblem(f"line {number}", shown, message)


def _env_json_problems(exc: SettingsError, environ: Mapping[str, str]) -> list[ConfigProblem]:
    """Name the EDGE_ variables whose list or table value is not JSON."""
    field = re.search(r'field "(\w+)"', str(exc))
    prefix = (ENV_PREFIX + (field[1] if field else "")).upper()
    problems = []
    for name, value in sorted(environ.items()):
        if not name.upper().startswith(prefix):
            continue
        try:
            json.loads(value)
        except ValueError:
            if value.lstrip()[:1] in ("[", "{"):
                problems.append(
                    ConfigProblem(
                        f"environment {name}", value, "not valid JSON (lists and tables take JSON)"
                    )
                )
    return problems or [
        ConfigProblem("environment", MISSING, f"{exc} (lists and tables take JSON)")
    ]


def _unknown_env_sections(environ: Mapping[str, str]) -> list[ConfigProblem]:
    """EDGE_<SECTION>__<KEY> variables whose section does not exist (a typo, e.g. EDGE_GATEWY__)."""
    sections = set(GatewayConfig.model_fields)
    problems = []
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or ENV_DELIMITER not in upper[len(ENV_PREFIX) :]:
            continue
        section = upper[len(ENV_PREFIX) :].split(ENV_DELIMITER, 1)[0].lower()
        if section not in sections:
            problems.append(
                ConfigProblem(
                    f"environment {name}",
                    value,
                    f"unknown section {section!r} (known: {', '.join(sorted(sections))})",
                )
            )
    return problems


def _translate(
    exc: ValidationError, data: Mapping[str, Any], environ: Mapping[str, str]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    env_upper = {k.upper() for k in environ}
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "edge_config" and "problems" in ctx:
            for sub, value, message in ctx["problems"]:
                problems.append(_problem(loc + tuple(sub), value, message, data, env_upper))
            continue
        message = _message(error["type"], error["msg"], ctx)
        value = MISSING if error["type"] == "missing" else error["input"]
        problems.append(_problem(loc, value, message, data, env_upper))
    return problems


def _message(kind: str, msg: str, ctx: Mapping[str, Any]) -> str:
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_TEXTS:
        return _PATTERN_TEXTS[ctx["pattern"]]
    if kind == "missing":
        return "required, but not given"
    if kind == "extra_forbidden":
        return "unknown key (not a setting here; check the spelling)"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _problem(
    loc: tuple[str | int, ...],
    value: object,
    message: str,
    data: Mapping[str, Any],
    env_upper: set[str],
) -> ConfigProblem:
    # say so when the value came from an EDGE_ variable, not from the file
    keys: list[str] = []
    for part in loc:
        if not isinstance(part, str):
            break
        keys.append(part)
    for n in range(len(keys), 1, -1):
        var = (ENV_PREFIX + ENV_DELIMITER.join(keys[:n])).upper()
        if var in env_upper:
            message = f"{message} (from environment variable {var})"
            break
    return ConfigProblem(_render_path(loc, data), value, message)


def _render_path(loc: tuple[str | int, ...], data: Mapping[str, Any]) -> str:
    """('counting', 'sources', 0, 'kind') -> 'counting.sources[press_good].kind' (or '.0.')."""
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list):
            label = _entry_label(node, part)
            out += f"[{label}]" if label is not None else f".{part}"
        else:
            out += f".{part}" if out else str(part)
        node = _step(node, part)
    return out


def _entry_label(entries: list[Any], index: int) -> str | None:
    if not 0 <= index < len(entries) or not isinstance(entries[index], dict):
        return None
    for key in ("name", "code"):
        label = entries[index].get(key)
        if isinstance(label, str) and _NAME_LABEL.match(label):
            same = sum(1 for e in entries if isinstance(e, dict) and e.get(key) == label)
            return label if same == 1 else None
    return None


_NAME_LABEL: Final = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


def _step(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


# -- to the domain ------------------------------------------------------------------------------

_SYSTEM_SCRAP_TEXTS: Final = {"setup": "Setup scrap", "machine": "Machine scrap"}


def planned_windows(cfg: GatewayConfig) -> tuple[tuple[int, int, str], ...]:
    """``[[calendar.planned_downtime]]`` as UTC epoch milliseconds (a local time read in the
    gateway's time zone)."""
    zone = ZoneInfo(cfg.gateway.timezone)

    def ms(moment: dt.datetime) -> int:
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)
        return round(aware.timestamp() * 1000)

    return tuple((ms(w.start), ms(w.end), w.reason) for w in cfg.calendar.planned_downtime)


def rules_from_config(cfg: GatewayConfig) -> WorkCenterRules:
    """The core's :class:`WorkCenterRules` from a validated configuration.

    The setup and machine scrap reasons are added to the scrap catalogue where it lacks them.
    """
    counting = cfg.counting
    scrap = [ScrapReason(r.code, r.text) for r in cfg.master_data.scrap_reasons]
    for code, text in (
        (counting.setup_scrap_reason, _SYSTEM_SCRAP_TEXTS["setup"]),
        (counting.machine_scrap_reason, _SYSTEM_SCRAP_TEXTS["machine"]),
    ):
        if not any(r.code == code for r in scrap):
            scrap.append(ScrapReason(code, text))
    master = MasterData(
        version=0,
        stop_reasons=tuple(
            StopReason(r.code, r.text, r.category) for r in cfg.master_data.stop_reasons
        ),
        scrap_reasons=tuple(scrap),
        alarm_reasons=tuple(cfg.master_data.alarm_reasons.items()),
        crew_size=cfg.master_data.crew_size,
    )
    conf = cfg.confirmations
    return WorkCenterRules(
        edge_id=cfg.gateway.edge_id,
        work_center=cfg.gateway.work_center,
        timezone=cfg.gateway.timezone,
        sources=tuple(
            CountSource(
                name=s.name,
                kind=CountKind(s.kind),
                signal=SignalType(s.signal),
                bits=s.bits,
                authoritative=s.authoritative,
                max_rate_per_s=s.max_rate_per_s,
                drift_tolerance=s.drift_tolerance,
            )
            for s in counting.sources
        ),
        plausibility_factor=counting.plausibility_factor,
        plausibility_grace_s=counting.plausibility_grace_s,
        setup_counts_as_good=counting.setup_counts_as == "good",
        setup_scrap_reason=counting.setup_scrap_reason,
        machine_scrap_reason=counting.machine_scrap_reason,
        operator_scrap_reduces_good=counting.operator_scrap_reduces_good,
        family_tool=cfg.operations.family_tool,
        auto_complete_at_target=cfg.operations.auto_complete_at_target,
        no_count_factor=cfg.stops.no_count_factor,
        micro_stop_s=cfg.stops.micro_stop_s,
        policy=ConfirmationPolicy(
            every_good=conf.every_good,
            every_minutes=conf.every_minutes,
            at_shift_end=conf.at_shift_end,
        ),
        shifts=tuple(s.to_domain() for s in cfg.shifts),
        holidays=tuple(cfg.calendar.holidays),
        planned_downtime=planned_windows(cfg),
        variance_threshold=conf.variance_threshold,
        variance_reason=conf.variance_reason,
        master_data=master,
        help_categories=tuple(cfg.andon.categories),
        help_escalate_after_s=cfg.andon.escalate_after_s,
        badges=tuple(BadgeHolder(b.badge, b.personnel, b.name) for b in cfg.badges),
        backflush_scrap=cfg.material.backflush_scrap,
        machine_hours=cfg.machine.hours,
        labour_per_operator=True,
        revision=CURRENT_REVISION,
        service=tuple(
            ServiceInterval(s.name, ServiceMeasure(s.measure), s.every, s.text) for s in cfg.service
        ),
    )
