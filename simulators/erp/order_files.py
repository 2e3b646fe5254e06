"""An ERP that drops released production orders into a folder, for the tests and the demo of
:mod:`edge.relay.orders_files`: SAP ``LOIPRO`` IDocs in XML (``LOIPRO01``..``LOIPRO05`` shape:
``EDI_DC40``, ``E1AFKOL`` with ``E1AFPOL``, ``E1JSTKL``, ``E1AFFLL`` > ``E1AFVOL`` with
``E1JSTVL``) and B2MML V0700 ``ProcessOperationsSchedule`` documents.

Orders are scripted as values: :class:`Order` (header, statuses, :class:`Operation` list) with
the changes an ERP makes: :meth:`Order.released`, :meth:`Order.with_quantity`,
:meth:`Order.locked`, :meth:`Order.unlocked`, :meth:`Order.teco`, :meth:`Order.deleted`
(``bare=True``: a header and its status only, as a deletion IDoc may be). Times are the plant's
local time (naive :class:`~datetime.datetime`); B2MML gets them in UTC through ``zone``.

:class:`OrderFiles` writes them into the inbox, each file whole or not at all (a temporary
``.<name>.<random>.tmp`` renamed into place, :func:`edge.relay.files.write_atomic`):

- ``loipro(*orders, name=, docnum=, created=, basic_type=)``: one file, one ``IDOC`` per order,
  ``DOCNUM`` counting up from ``first_docnum`` (or ``docnum`` for the first), ``CREDAT``/
  ``CRETIM`` from a clock that advances one minute per document (or ``created``);
- ``b2mml(*orders, name=, created=, verb=)``: one ``<verb>OperationsSchedule`` with one
  ``OperationsRequest`` per order; ``RequestState`` from the order's statuses (deleted:
  ``Cancelled``, TECO/closed: ``Closed``, locked: ``Held``, released: ``Released``, else
  ``Forecast``), standards as ``SegmentParameter`` ``SetupDuration``/``RunDurationPerUnit``;
- ``write(name, data)``: any bytes (hand-written or broken files).

``python -m simulators.erp.order_files --inbox DIR [--format loipro|b2mml] [--zone ZONE]`` writes
a few demo orders (:func:`demo`): two released, one locked, one technically completed, and a
quantity change of the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.relay.files import B2MML_NS, B2MML_RELEASE, iso_duration, write_atomic

_SECONDS = {"S": 1, "SEC": 1, "MIN": 60, "H": 3600, "HUR": 3600, "D": 86400, "DAY": 86400}

RELEASED = "I0002"
CREATED = "I0001"
LOCKED = "I0043"
TECO = "I0045"
CLOSED = "I0046"
DELETION_FLAG = "I0076"
DELETED = "I0013"
CONFIRMED = "I0009"


@dataclass(frozen=True, slots=True)
class Component:
    """One ``E1RESBL`` under an operation: a reservation item of the order."""

    material: str
    quantity: Decimal  # BDMNG: for the whole operation quantity
    unit: str = "PC"  # MEINS
    item: str = "0001"  # RSPOS
    backflush: bool = False  # BACKFLUSH X
    batch_managed: bool = False  # XCHPF X
    batch: str | None = None  # CHARG, a batch the ERP assigned already
    co_product: bool = False  # KZKUP X
    movement: str = "261"  # BWART


@dataclass(frozen=True, slots=True)
class Operation:
    """One ``E1AFVOL`` / ``SegmentRequirement``."""

    number: str = "0010"
    work_center: str = "WC-4711"
    text: str = "Assemble housing"
    quantity: Decimal | None = None  # None: the order's quantity
    unit: str | None = None  # None: the order's unit
    base_quantity: Decimal = Decimal(100)  # BMSCH: the standards are per this many units
    setup: Decimal = Decimal(15)  # VGW01
    setup_unit: str = "MIN"
    run: Decimal = Decimal(240)  # VGW02, per base_quantity
    run_unit: str = "MIN"
    start: datetime | None = None  # FSAVD/FSAVZ, plant time; None: the order's start
    finish: datetime | None = None  # FSEDD/FSEDZ
    latest_finish: datetime | None = None  # SSEDD/SSEDZ (B2MML LatestEndTime)
    statuses: tuple[str, ...] = ()  # E1JSTVL
    confirmation_no: str | None = None  # RUECK
    components: tuple[Component, ...] = ()  # E1RESBL


@dataclass(frozen=True, slots=True)
class Order:
    """One production order: ``E1AFKOL`` (+ ``E1AFPOL``) / ``OperationsRequest``."""

    order_id: str = "1000123"
    material: str = "FG-100"
    quantity: Decimal = Decimal(100)
    unit: str = "ST"
    start: datetime = datetime(2025, 3, 4, 6, 0)  # GSTRS/GSUZS
    finish: datetime = datetime(2025, 3, 4, 14, 0)  # GLTRS/GLUZS
    statuses: tuple[str, ...] = (RELEASED,)  # E1JSTKL
    operations: tuple[Operation, ...] = (Operation(),)
    over_tolerance_pct: Decimal | None = None  # UEBTO
    under_tolerance_pct: Decimal | None = None  # UNTTO
    plant: str = "1010"
    order_type: str = "PP01"
    bare: bool = False  # no items or operations in the IDoc (a deletion with a bare header)

    def _with(self, *add: str, drop: Sequence[str] = ()) -> Order:
        kept = tuple(s for s in self.statuses if s not in drop and s not in add)
        return dataclasses.replace(self, statuses=(*kept, *add))

    def released(self) -> Order:
        return self._with(RELEASED, drop=(CREATED,))

    def with_quantity(self, quantity: Decimal | int | str) -> Order:
        """The order's quantity changed; every operation follows it."""
        q = Decimal(quantity)
        ops = tuple(dataclasses.replace(op, quantity=None) for op in self.operations)
        return dataclasses.replace(self, quantity=q, operations=ops)

    def locked(self) -> Order:
        return self._with(LOCKED)

    def unlocked(self) -> Order:
        return self._with(drop=(LOCKED,))

    def teco(self) -> Order:
        return self._with(TECO)

    def deleted(self, *, bare: bool = False) -> Order:
        """Marked for deletion (``I0076``); ``bare``: the IDoc carries no operations."""
        return dataclasses.replace(self._with(DELETION_FLAG), bare=bare)

    def with_operation(self, number: str, **changes: object) -> Order:
        ops = tuple(
            dataclasses.replace(op, **changes) if op.number == number else op  # type: ignore[arg-type]
            for op in self.operations
        )
        return dataclasses.replace(self, operations=ops)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def _segment(parent: ET.Element, tag: str) -> ET.Element:
    return ET.SubElement(parent, tag, {"SEGMENT": "1"})


def _num(value: Decimal) -> str:
    return f"{value:.3f}"


def _day(moment: datetime) -> str:
    return moment.strftime("%Y%m%d")


def _clock(moment: datetime) -> str:
    return moment.strftime("%H%M%S")


def _padded(order_id: str) -> str:
    return order_id.zfill(12) if order_id.isdigit() else order_id


def loipro_document(
    orders: Sequence[Order],
    *,
    docnums: Sequence[int],
    created: datetime,
    basic_type: str = "LOIPRO01",
) -> bytes:
    """One ``<basic_type>`` root with one ``IDOC`` per order (``docnums`` in the same order)."""
    root = ET.Element(basic_type)
    for order, docnum in zip(orders, docnums, strict=True):
        idoc = ET.SubElement(root, "IDOC", {"BEGIN": "1"})
        dc = _segment(idoc, "EDI_DC40")
        for tag, value in (
            ("TABNAM", "EDI_DC40"),
            ("MANDT", "100"),
            ("DOCNUM", f"{docnum:016d}"),
            ("DIRECT", "1"),
            ("IDOCTYP", basic_type),
            ("MESTYP", "LOIPRO"),
            ("SNDPOR", "SAPS4H"),
            ("SNDPRT", "LS"),
            ("SNDPRN", "S4HCLNT100"),
            ("RCVPOR", "RELAY"),
            ("RCVPRT", "LS"),
            ("RCVPRN", "ERPRELAY"),
            ("CREDAT", _day(created)),
            ("CRETIM", _clock(created)),
        ):
            _sub(dc, tag, value)
        header = _segment(idoc, "E1AFKOL")
        for tag, value in (
            ("AUFNR", _padded(order.order_id)),
            ("AUART", order.order_type),
            ("AUTYP", "10"),
            ("WERKS", order.plant),
            ("MATNR", order.material),
            ("GAMNG", _num(order.quantity)),
            ("GMEIN", order.unit),
            ("GSTRP", _day(order.start)),
            ("GLTRP", _day(order.finish)),
            ("GSTRS", _day(order.start)),
            ("GSUZS", _clock(order.start)),
            ("GLTRS", _day(order.finish)),
            ("GLUZS", _clock(order.finish)),
        ):
            _sub(header, tag, value)
        if not order.bare:
            item = _segment(header, "E1AFPOL")
            _sub(item, "POSNR", "0001")
            _sub(item, "MATNR", order.material)
            _sub(item, "PSMNG", _num(order.quantity))
            _sub(item, "AMEIN", order.unit)
            _sub(item, "MEINS", order.unit)
            if order.under_tolerance_pct is not None:
                _sub(item, "UNTTO", f"{order.under_tolerance_pct:.1f}")
            if order.over_tolerance_pct is not None:
                _sub(item, "UEBTO", f"{order.over_tolerance_pct:.1f}")
        for status in order.statuses:
            _sub(_segment(header, "E1JSTKL"), "STAT", status)
        if order.bare:
            continue
        sequence = _segment(header, "E1AFFLL")
        _sub(sequence, "PLNFL", "000000")
        for op in order.operations:
            vo = _segment(sequence, "E1AFVOL")
            start = op.start or order.start
            _sub(vo, "VORNR", op.number)
            _sub(vo, "LTXA1", op.text)
            _sub(vo, "ARBPL", op.work_center)
            _sub(vo, "STEUS", "PP01")
            _sub(vo, "MGVRG", _num(op.quantity if op.quantity is not None else order.quantity))
            _sub(vo, "MEINH", op.unit or order.unit)
            _sub(vo, "BMSCH", _num(op.base_quantity))
            _sub(vo, "VGW01", _num(op.setup))
            _sub(vo, "VGE01", op.setup_unit)
            _sub(vo, "VGW02", _num(op.run))
            _sub(vo, "VGE02", op.run_unit)
            _sub(vo, "FSAVD", _day(start))
            _sub(vo, "FSAVZ", _clock(start))
            if op.finish is not None:
                _sub(vo, "FSEDD", _day(op.finish))
                _sub(vo, "FSEDZ", _clock(op.finish))
            if op.latest_finish is not None:
                _sub(vo, "SSEDD", _day(op.latest_finish))
                _sub(vo, "SSEDZ", _clock(op.latest_finish))
            if op.confirmation_no is not None:
                _sub(vo, "RUECK", op.confirmation_no)
            for status in op.statuses:
                _sub(_segment(vo, "E1JSTVL"), "STAT", status)
            for c in op.components:
                res = _segment(vo, "E1RESBL")
                _sub(res, "RSNUM", "0000012345")
                _sub(res, "RSPOS", c.item)
                _sub(res, "MATNR", c.material)
                _sub(res, "WERKS", "1010")
                _sub(res, "BDMNG", _num(c.quantity))
                _sub(res, "MEINS", c.unit)
                _sub(res, "BWART", c.movement)
                if c.batch is not None:
                    _sub(res, "CHARG", c.batch)
                for tag, on in (
                    ("BACKFLUSH", c.backflush),
                    ("XCHPF", c.batch_managed),
                    ("KZKUP", c.co_product),
                ):
                    if on:
                        _sub(res, tag, "X")
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'.encode()


def request_state(statuses: Sequence[str]) -> str:
    """The B2MML ``RequestState`` for SAP-style statuses."""
    if DELETED in statuses or DELETION_FLAG in statuses:
        return "Cancelled"
    if TECO in statuses or CLOSED in statuses:
        return "Closed"
    if CONFIRMED in statuses:
        return "Completed"
    if LOCKED in statuses:
        return "Held"
    if RELEASED in statuses:
        return "Released"
    return "Forecast"


def _utc(moment: datetime, zone: ZoneInfo) -> str:
    return moment.replace(tzinfo=zone).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parameter(parent: ET.Element, ident: str, seconds: float) -> None:
    parameter = _sub(parent, "SegmentParameter")
    _sub(parameter, "ID", ident)
    value = _sub(parameter, "Value")
    _sub(value, "ValueString", iso_duration(seconds))
    _sub(value, "DataType", "duration")


def b2mml_document(
    orders: Sequence[Order],
    *,
    created: datetime,
    zone: ZoneInfo,
    verb: str = "Process",
    schedule_id: str = "SCHED-1",
) -> bytes:
    """``<verb>OperationsSchedule`` with one ``OperationsRequest`` per order (child order per
    the V0700 sequence)."""
    root = ET.Element(f"{verb}OperationsSchedule", {"xmlns": B2MML_NS, "releaseID": B2MML_RELEASE})
    area = _sub(root, "ApplicationArea")
    sender = _sub(area, "Sender")
    _sub(sender, "LogicalID", "ERP")
    _sub(area, "CreationDateTime", _utc(created, zone))
    data_area = _sub(root, "DataArea")
    _sub(data_area, verb)
    schedule = _sub(data_area, "OperationsSchedule")
    _sub(schedule, "ID", schedule_id)
    _sub(schedule, "OperationsType", "Production")
    for order in orders:
        request = _sub(schedule, "OperationsRequest")
        _sub(request, "ID", order.order_id)
        _sub(request, "OperationsType", "Production")
        _sub(request, "StartTime", _utc(order.start, zone))
        _sub(request, "EndTime", _utc(order.finish, zone))
        _sub(request, "RequestState", request_state(order.statuses))
        if order.bare:
            continue
        for op in order.operations:
            segment = _sub(request, "SegmentRequirement")
            _sub(segment, "ID", op.number)
            _sub(segment, "Description", op.text)
            _sub(segment, "OperationsType", "Production")
            _sub(segment, "ProcessSegmentID", op.number)
            _sub(segment, "EarliestStartTime", _utc(op.start or order.start, zone))
            _sub(segment, "LatestEndTime", _utc(op.latest_finish or order.finish, zone))
            if op.statuses:
                _sub(segment, "SegmentState", request_state(op.statuses))
            setup_s = float(op.setup * _SECONDS[op.setup_unit])
            run_s = float(op.run * _SECONDS[op.run_unit] / op.base_quantity)
            _parameter(segment, "SetupDuration", setup_s)
            _parameter(segment, "RunDurationPerUnit", run_s)
            equipment = _sub(segment, "EquipmentRequirement")
            _sub(equipment, "EquipmentID", op.work_center)
            material = _sub(segment, "MaterialRequirement")
            _sub(material, "MaterialDefinitionID", order.material)
            _sub(material, "MaterialUse", "Produced")
            quantity = _sub(material, "Quantity")
            qty = op.quantity if op.quantity is not None else order.quantity
            _sub(quantity, "QuantityString", format(qty.normalize(), "f"))
            _sub(quantity, "DataType", "decimal")
            _sub(quantity, "UnitOfMeasure", op.unit or order.unit)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'.encode()


@dataclass(slots=True)
class OrderFiles:
    """Writes order files into ``inbox`` (see the module docstring)."""

    inbox: Path
    zone: str = "UTC"
    first_docnum: int = 4711001
    first_created: datetime = datetime(2025, 3, 3, 18, 0)
    written: list[Path] = field(default_factory=list)
    _docnums: itertools.count[int] = field(init=False)
    _documents: itertools.count[int] = field(init=False)

    def __post_init__(self) -> None:
        self.inbox = Path(self.inbox)
        self._docnums = itertools.count(self.first_docnum)
        self._documents = itertools.count(0)

    def _created(self, created: datetime | None) -> tuple[int, datetime]:
        n = next(self._documents)
        return n, created if created is not None else self.first_created + timedelta(minutes=n)

    def write(self, name: str, data: bytes) -> Path:
        """``data`` as ``inbox/name``, atomically."""
        write_atomic(self.inbox, name, data)
        path = self.inbox / name
        self.written.append(path)
        return path

    def loipro(
        self,
        *orders: Order,
        name: str | None = None,
        docnum: int | None = None,
        created: datetime | None = None,
        basic_type: str = "LOIPRO01",
    ) -> Path:
        if docnum is not None:
            docnums = list(range(docnum, docnum + len(orders)))
        else:
            docnums = [next(self._docnums) for _ in orders]
        _, when = self._created(created)
        data = loipro_document(orders, docnums=docnums, created=when, basic_type=basic_type)
        return self.write(name or f"LOIPRO_{docnums[0]:016d}.xml", data)

    def b2mml(
        self,
        *orders: Order,
        name: str | None = None,
        created: datetime | None = None,
        verb: str = "Process",
    ) -> Path:
        n, when = self._created(created)
        data = b2mml_document(
            orders, created=when, zone=ZoneInfo(self.zone), verb=verb, schedule_id=f"SCHED-{n}"
        )
        return self.write(name or f"OperationsSchedule_{n:06d}.xml", data)


def demo_orders() -> list[Order]:
    """Four orders on the demo work centers WC-4711 and WC-4712."""
    day = datetime(2025, 3, 4, 6, 0)
    housing = Order(
        order_id="1000123",
        operations=(
            Operation("0010", "WC-4711", "Assemble housing"),
            Operation("0020", "WC-4712", "Test housing", start=day + timedelta(hours=4)),
        ),
        over_tolerance_pct=Decimal(5),
        under_tolerance_pct=Decimal(2),
    )
    bracket = Order(
        order_id="1000124",
        material="FG-4711",
        quantity=Decimal(500),
        unit="ST",
        start=day + timedelta(hours=2),
        finish=day + timedelta(hours=10),
        operations=(
            Operation("0010", "WC-4711", "Bracket 30x15", setup=Decimal(30), run=Decimal(50)),
        ),
    )
    locked = Order(order_id="1000125", start=day + timedelta(hours=5)).locked()
    teco = Order(order_id="1000126", start=day + timedelta(hours=6)).teco()
    return [housing, bracket, locked, teco]


def demo(inbox: Path, *, fmt: str = "loipro", zone: str = "UTC") -> list[Path]:
    """The demo orders, then a quantity change of the first, into ``inbox``."""
    files = OrderFiles(Path(inbox), zone=zone)
    orders = demo_orders()
    if fmt == "b2mml":
        files.b2mml(*orders)
        files.b2mml(orders[0].with_quantity(120))
    else:
        for order in orders:
            files.loipro(order)
        files.loipro(orders[0].with_quantity(120))
    return list(files.written)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--inbox", type=Path, required=True, help="the folder to write into")
    parser.add_argument("--format", choices=("loipro", "b2mml"), default="loipro")
    parser.add_argument("--zone", default="UTC", help="the plant's time zone (B2MML times)")
    args = parser.parse_args(argv)
    args.inbox.mkdir(parents=True, exist_ok=True)
    for path in demo(args.inbox, fmt=args.format, zone=args.zone):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
