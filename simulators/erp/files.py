"""A file ERP for tests and demos: it watches a drop folder, reads each new file (B2MML V0700 or
CSV, told apart by the first character: ``<`` is XML), checks it, answers ``<name>.ok``
(``document=<number>``) or ``<name>.err`` (``E1xx: text``) in the answer folder and moves the
file to the archive folder (or deletes it when there is none).

It reads what :mod:`edge.relay.files` writes, with the same column list (:data:`COLUMNS`) and
namespace, and ignores names starting with ``.`` or ending in ``.tmp`` (files being written).
Answers are written under a temporary name and renamed, as the adapter asks of an ERP.

Checks, in order (error codes are this stand-in's own):

- ``E900`` the file cannot be read (not B2MML, wrong CSV header, a missing field, a goods
  movement without a material, a unit or a quantity above 0);
- ``E101`` unknown order (``orders`` given and the order not in it);
- ``E199`` an order rejected with :meth:`FileErpStandIn.reject_order` (its text, its code);
- ``E102`` yield above ``max_qty``;
- ``E103`` a reversal of a confirmation not in the ledger, ``E104`` of one already reversed.

B2MML goods movements (``MaterialActual`` ``Consumed``, a return ``Other``/``Returned``) are
kept with each posting; :meth:`FileErpStandIn.consumption` sums what an order consumed, net of
reversals.

The ledger (:attr:`FileErpStandIn.postings`, :meth:`FileErpStandIn.count`,
:meth:`FileErpStandIn.duplicates`) records every posting the ERP made by ``idem_key``: two files
with the same key are two postings (a real file ERP does not deduplicate; ``dedupe=True`` answers
the second with the first one's document instead). Knobs: ``delay_s`` (per file),
:meth:`~FileErpStandIn.stop_processing` / :meth:`~FileErpStandIn.start_processing` (the ERP
down: files stay in the folder), :meth:`~FileErpStandIn.reject_order`, ``answer=False`` (an ERP
that archives and never answers).

``python -m simulators.erp.files --drop DIR --ack DIR [--archive DIR]`` runs it until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from edge.relay.files import B2MML_NS, COLUMNS, ERR_SUFFIX, OK_SUFFIX, TMP_SUFFIX
from simulators.erp.serve import AsyncLifecycle

_N = f"{{{B2MML_NS}}}"


@dataclass(slots=True)
class Entry:
    """One posting the ERP made (a confirmation or a reversal)."""

    file: str
    kind: str
    idem_key: str
    order_id: str
    operation: str
    yield_qty: Decimal
    scrap_qty: Decimal
    rework_qty: Decimal
    unit: str
    document: str
    fields: dict[str, str] = field(default_factory=dict)
    reverses: str | None = None
    reversed_by: str | None = None
    # (material, batch, quantity, unit): an issue positive, a return negative
    movements: list[tuple[str, str, Decimal, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Answer:
    file: str
    ok: bool
    text: str


class BadFile(Exception):
    pass


# -- reading ---------------------------------------------------------------------------------


def _dec(text: str, comma: bool) -> Decimal:
    try:
        return Decimal(text.replace(",", ".") if comma else text) if text else Decimal(0)
    except InvalidOperation:
        raise BadFile(f"not a number: {text!r}") from None


def _text(el: ET.Element | None, path: str) -> str:
    if el is None:
        return ""
    found = el.find(path)
    return (found.text or "").strip() if found is not None else ""


def read_b2mml(data: bytes) -> dict[str, str]:
    """The fields of a B2MML document by the CSV column names (quantities with a point)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise BadFile(f"not XML: {exc}") from None
    tag = root.tag
    if tag == f"{_N}ProcessOperationsPerformance":
        kind = "confirmation"
    elif tag == f"{_N}CancelOperationsPerformance":
        kind = "reversal"
    else:
        raise BadFile(f"not a B2MML V0700 OperationsPerformance document: {tag}")
    perf = root.find(f"{_N}DataArea/{_N}OperationsPerformance")
    seg = root.find(
        f"{_N}DataArea/{_N}OperationsPerformance/{_N}OperationsResponse/{_N}SegmentResponse"
    )
    if perf is None or seg is None:
        raise BadFile("no OperationsPerformance/OperationsResponse/SegmentResponse")
    key = _text(root, f"{_N}ApplicationArea/{_N}Sender/{_N}ReferenceID")
    perf_id = _text(perf, f"{_N}ID")
    out = {
        "kind": kind,
        "idem_key": key or perf_id,
        "order": _text(perf, f"{_N}OperationsScheduleID"),
        "operation": _text(seg, f"{_N}ProcessSegmentID"),
        "work_center": _text(seg, f"{_N}HierarchyScope/{_N}EquipmentID"),
        "reverses_key": perf_id if kind == "reversal" else "",
        "unit": "",
        "material": "",
    }
    for data_el in seg.findall(f"{_N}SegmentData"):
        out[f"data:{_text(data_el, f'{_N}ID')}"] = _text(data_el, f"{_N}Value/{_N}ValueString")
    totals = {"yield": Decimal(0), "scrap": Decimal(0), "rework": Decimal(0)}
    for actual in seg.findall(f"{_N}MaterialActual"):
        use_el = actual.find(f"{_N}MaterialUse")
        use = (use_el.text or "") if use_el is not None else ""
        other = use_el.get("OtherValue", "") if use_el is not None else ""
        qty = _dec(_text(actual, f"{_N}Quantity/{_N}QuantityString"), comma=False)
        if use == "Consumed" or (use == "Other" and other == "Returned"):
            continue  # goods movements: read_movements
        out["unit"] = out["unit"] or _text(actual, f"{_N}Quantity/{_N}UnitOfMeasure")
        out["material"] = out["material"] or _text(actual, f"{_N}MaterialDefinitionID")
        out["batch"] = out.get("batch") or _text(actual, f"{_N}MaterialLotID")
        if use == "Produced":
            totals["yield"] += qty
        elif use == "Other" and other in {"Scrap", "Rework"}:
            totals[other.lower()] += qty
        else:
            raise BadFile(f"unexpected MaterialUse {use!r} {other!r}")
    out.update({k: format(v, "f") for k, v in totals.items()})
    if not out["idem_key"] or not out["order"]:
        raise BadFile("no idempotency key (Sender/ReferenceID) or no order")
    return out


def read_movements(data: bytes) -> list[tuple[str, str, Decimal, str]]:
    """The goods movements of a B2MML document (``MaterialUse`` ``Consumed``, and ``Other``
    ``OtherValue="Returned"`` as a negative quantity): (material, batch, quantity, unit). A
    movement without a material, a unit or a quantity above 0 is a file the ERP cannot read."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise BadFile(f"not XML: {exc}") from None
    path = (
        f"{_N}DataArea/{_N}OperationsPerformance/{_N}OperationsResponse/{_N}SegmentResponse/"
        f"{_N}MaterialActual"
    )
    out: list[tuple[str, str, Decimal, str]] = []
    for n, actual in enumerate(root.findall(path), 1):
        use_el = actual.find(f"{_N}MaterialUse")
        use = (use_el.text or "") if use_el is not None else ""
        other = use_el.get("OtherValue", "") if use_el is not None else ""
        if not (use == "Consumed" or (use == "Other" and other == "Returned")):
            continue
        material = _text(actual, f"{_N}MaterialDefinitionID")
        unit = _text(actual, f"{_N}Quantity/{_N}UnitOfMeasure")
        qty = _dec(_text(actual, f"{_N}Quantity/{_N}QuantityString"), comma=False)
        for name, value in (("MaterialDefinitionID", material), ("UnitOfMeasure", unit)):
            if not value:
                raise BadFile(f"MaterialActual {n} ({use} {other}): no {name}")
        if qty <= 0:
            raise BadFile(f"MaterialActual {n} ({material}): QuantityString {qty} is not above 0")
        batch = _text(actual, f"{_N}MaterialLotID")
        out.append((material, batch, qty if use == "Consumed" else -qty, unit))
    return out


def read_csv(data: bytes, *, encoding: str, delimiter: str) -> dict[str, str]:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BadFile(f"not {encoding}: {exc}") from None
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise BadFile(f"the header is not {delimiter.join(COLUMNS)}")
    if len(rows) != 2 or len(rows[1]) != len(COLUMNS):
        raise BadFile(f"expected one row of {len(COLUMNS)} fields")
    return dict(zip(COLUMNS, rows[1], strict=True))


# -- the ERP ---------------------------------------------------------------------------------


class FileErpStandIn(AsyncLifecycle):
    """The file ERP; ``async with FileErpStandIn(drop, ack, archive) as erp:`` runs it."""

    def __init__(
        self,
        drop_dir: Path,
        ack_dir: Path | None,
        archive_dir: Path | None = None,
        *,
        orders: set[str] | None = None,
        max_qty: Decimal | None = None,
        delay_s: float = 0.0,
        scan_s: float = 0.02,
        encoding: str = "utf-8",
        csv_delimiter: str = ";",
        decimal_comma: bool = False,
        dedupe: bool = False,
        answer: bool = True,
        first_document: int = 4900000001,
    ) -> None:
        self.drop_dir = Path(drop_dir)
        self.ack_dir = Path(ack_dir) if ack_dir is not None else None
        self.archive_dir = Path(archive_dir) if archive_dir is not None else None
        self.orders = orders
        self.max_qty = max_qty
        self.delay_s = delay_s
        self.scan_s = scan_s
        self.encoding = encoding
        self.csv_delimiter = csv_delimiter
        self.decimal_comma = decimal_comma
        self.dedupe = dedupe
        self.answer = answer
        self.postings: list[Entry] = []
        self.answers: list[Answer] = []
        self.files_seen: list[str] = []
        self.failures: list[tuple[str, str]] = []
        self._broken: set[str] = set()
        self._next_doc = first_document
        self._rejected: dict[str, tuple[str, str]] = {}
        self._running = asyncio.Event()
        self._running.set()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # -- control

    def stop_processing(self) -> None:
        """The ERP is down: files stay in the drop folder until :meth:`start_processing`."""
        self._running.clear()

    def start_processing(self) -> None:
        self._running.set()

    def reject_order(self, order_id: str, text: str, code: str = "E199") -> None:
        """Every posting for ``order_id`` is answered ``<code>: <text>``."""
        self._rejected[order_id] = (code, text)

    def allow_order(self, order_id: str) -> None:
        self._rejected.pop(order_id, None)

    # -- the ledger

    def count(self, idem_key: str) -> int:
        """How many times the ERP posted ``idem_key`` (1 = exactly once)."""
        return sum(1 for e in self.postings if e.idem_key == idem_key)

    def duplicates(self) -> dict[str, int]:
        """Keys posted more than once, with how often."""
        counts: dict[str, int] = {}
        for e in self.postings:
            counts[e.idem_key] = counts.get(e.idem_key, 0) + 1
        return {k: n for k, n in counts.items() if n > 1}

    def entry(self, idem_key: str) -> Entry | None:
        return next((e for e in self.postings if e.idem_key == idem_key), None)

    def consumption(self, order_id: str) -> dict[tuple[str, str], Decimal]:
        """(material, batch) -> the net quantity the order consumed: the movements of its
        confirmations, less those of the reversals (a reversal takes its confirmation's back)."""
        net: dict[tuple[str, str], Decimal] = {}
        for entry in self.postings:
            if entry.order_id != order_id:
                continue
            sign = Decimal(-1) if entry.kind == "reversal" else Decimal(1)
            for material, batch, qty, _unit in entry.movements:
                key = (material, batch)
                net[key] = net.get(key, Decimal(0)) + sign * qty
        return {k: v for k, v in net.items() if v}

    def is_reversed(self, idem_key: str) -> bool:
        e = self.entry(idem_key)
        return e is not None and e.reversed_by is not None

    async def wait_answers(self, n: int, timeout: float = 5.0) -> list[Answer]:
        """Until ``n`` files have been answered (or processed, with ``answer=False``)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.files_seen) >= n)
        return list(self.answers)

    # -- running

    async def _astart(self) -> None:
        self._task = asyncio.create_task(self._run(), name="file-erp-stand-in")

    async def _astop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._running.wait()
            names = await asyncio.to_thread(self._ready_files)
            for name in names:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                await self._running.wait()
                try:
                    await self.process(name)
                except Exception as exc:  # a stand-in reports it and goes on
                    # left where it is and never read again (reading it again would post twice)
                    self.failures.append((name, repr(exc)))
                    self._broken.add(name)
            await asyncio.sleep(self.scan_s)

    def _ready_files(self) -> list[str]:
        entries = []
        with os.scandir(self.drop_dir) as it:
            for entry in it:
                if entry.name.startswith(".") or entry.name.endswith(TMP_SUFFIX):
                    continue
                if entry.name in self._broken:
                    continue
                if entry.is_file():
                    entries.append((entry.stat().st_mtime_ns, entry.name))
        return [name for _, name in sorted(entries)]

    async def process(self, name: str) -> None:
        """Read, check, post, answer and archive one file of the drop folder."""
        path = self.drop_dir / name
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return
        ok, text = self._book(name, data)
        await asyncio.to_thread(self._finish, name, ok, text)
        async with self._changed:
            self.files_seen.append(name)
            if self.answer:
                self.answers.append(Answer(name, ok, text))
            self._changed.notify_all()

    def _finish(self, name: str, ok: bool, text: str) -> None:
        src = self.drop_dir / name
        if self.archive_dir is not None:
            os.replace(src, self.archive_dir / name)
        else:
            with contextlib.suppress(FileNotFoundError):
                src.unlink()
        if self.answer and self.ack_dir is not None:
            suffix = OK_SUFFIX if ok else ERR_SUFFIX
            self._write(self.ack_dir, f"{name}{suffix}", f"{text}\n".encode(self.encoding))

    @staticmethod
    def _write(directory: Path, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, directory / name)

    def _read(self, data: bytes) -> dict[str, str]:
        if data.lstrip()[:1] == b"<":
            return read_b2mml(data)
        fields = read_csv(data, encoding=self.encoding, delimiter=self.csv_delimiter)
        for q in ("yield", "scrap", "rework"):
            fields[q] = format(_dec(fields[q], self.decimal_comma), "f")
        return fields

    def _book(self, name: str, data: bytes) -> tuple[bool, str]:
        """The ERP's verdict: ``(True, "document=...")`` or ``(False, "E1xx: text")``."""
        try:
            f = self._read(data)
            yield_qty = Decimal(f["yield"])
            movements = read_movements(data) if data.lstrip()[:1] == b"<" else []
        except (BadFile, KeyError) as exc:
            return False, f"E900: cannot read {name}: {exc}"
        if f["kind"] not in {"confirmation", "reversal"} or not f["idem_key"]:
            return False, f"E900: cannot read {name}: kind {f['kind']!r}, key {f['idem_key']!r}"
        order = f["order"]
        if self.orders is not None and order not in self.orders:
            return False, f"E101: Order {order} does not exist"
        if order in self._rejected:
            code, text = self._rejected[order]
            return False, f"{code}: {text}"
        key = f["idem_key"]
        if self.dedupe and (earlier := self.entry(key)) is not None:
            return True, f"document={earlier.document}"
        reverses: Entry | None = None
        if f["kind"] == "reversal":
            reverses = self.entry(f["reverses_key"])
            if reverses is None:
                return False, f"E103: Confirmation {f['reverses_key']} not found"
            if reverses.reversed_by is not None:
                return False, f"E104: Confirmation {reverses.document} is already cancelled"
        elif self.max_qty is not None and yield_qty > self.max_qty:
            return False, f"E102: Quantity {yield_qty} exceeds {self.max_qty} for order {order}"
        document = str(self._next_doc)
        self._next_doc += 1
        entry = Entry(
            file=name,
            kind=f["kind"],
            idem_key=key,
            order_id=order,
            operation=f["operation"],
            yield_qty=yield_qty,
            scrap_qty=Decimal(f["scrap"]),
            rework_qty=Decimal(f["rework"]),
            unit=f.get("unit", ""),
            document=document,
            fields=f,
            reverses=reverses.idem_key if reverses is not None else None,
            movements=movements,
        )
        if reverses is not None:
            reverses.reversed_by = key
        self.postings.append(entry)
        return True, f"document={document}"


async def _main(args: argparse.Namespace) -> None:
    erp = FileErpStandIn(
        Path(args.drop),
        Path(args.ack),
        Path(args.archive) if args.archive else None,
        orders=set(args.orders.split(",")) if args.orders else None,
        max_qty=Decimal(args.max_qty) if args.max_qty else None,
        delay_s=args.delay,
        encoding=args.encoding,
        csv_delimiter=args.delimiter,
        decimal_comma=args.decimal_comma,
    )
    async with erp:
        seen = 0
        while True:
            await erp.wait_answers(seen + 1, timeout=365 * 86400)
            for answer in erp.answers[seen:]:
                print(f"{answer.file}: {'ok' if answer.ok else 'error'} {answer.text}", flush=True)
            seen = len(erp.files_seen)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.erp.files", description=__doc__)
    parser.add_argument("--drop", required=True, help="the drop folder to watch")
    parser.add_argument("--ack", required=True, help="where .ok and .err answers go")
    parser.add_argument("--archive", help="where processed files go (default: deleted)")
    parser.add_argument("--orders", help="comma-separated known orders (default: any)")
    parser.add_argument("--max-qty", help="largest yield accepted")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per file")
    parser.add_argument("--encoding", default="utf-8", choices=["utf-8", "cp1252"])
    parser.add_argument("--delimiter", default=";")
    parser.add_argument("--decimal-comma", action="store_true")
    args = parser.parse_args(argv)
    for d in (args.drop, args.ack, args.archive):
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
