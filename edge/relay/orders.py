"""Orders down: what an ERP has released for a work center, as the relay reads it, and the one
interface every order source implements (SAP OData, LOIPRO IDoc files, D365, B2MML files).

A source answers :meth:`OrderSource.snapshot` with every operation the ERP currently has for
the work centers asked about, as :class:`ErpOperation` (the ERP's standards, in the units of the
dispatch list), each with its ERP :data:`ErpStatus`:

- ``released``: to be worked; it belongs in the work center's dispatch list;
- ``held``: released, but the ERP blocks it for now (SAP ``OrderIsLocked``, a user status, a
  D365 stopped order): it stays in the list and the gateway is sent ``order/hold``; back to
  ``released`` it is sent ``order/release``;
- ``cancelled``: deleted, marked for deletion, technically completed or closed in the ERP
  before the work center finished it: the gateway is sent ``order/cancel``, and it leaves the
  list.

Operations the source no longer reports at all (fully confirmed, moved to another work
center) simply leave the next dispatch list. The dispatcher (:mod:`edge.relay.dispatch`) turns
successive snapshots into the contract's messages; a source only reads.

A source never raises for what the ERP or the network does: :meth:`OrderSource.snapshot`
returns a :class:`SnapshotFailed` naming what happened, and the dispatcher keeps the last good
list (a failed read is never an empty list).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import ClassVar, Literal

from edge.domain.limits import QUANTITY_PLACES

ErpStatus = Literal["released", "held", "cancelled"]


@dataclass(frozen=True, slots=True)
class ErpComponent:
    """A component of an operation (``edge.sync.contract.ComponentMsg``): how much of
    ``material`` one unit of the operation takes, in ``unit``."""

    material: str
    qty_per_unit: Decimal
    unit: str
    backflush: bool = False
    batch_managed: bool = False
    item: str | None = None


def qty_per_unit(required: Decimal, quantity: Decimal) -> Decimal:
    """How much of a component one unit takes: ``required`` (for ``quantity`` units) divided by
    ``quantity``, rounded half-even to the contract's decimal places, without trailing zeros
    (``0`` when it rounds away: the caller refuses that component). ``quantity`` is above 0."""
    per = (required / quantity).quantize(Decimal(1).scaleb(-QUANTITY_PLACES), ROUND_HALF_EVEN)
    if per == per.to_integral_value():
        return per.quantize(Decimal(1))
    return per.normalize()


@dataclass(frozen=True, slots=True)
class ErpOperation:
    """One operation of a production order for one work center, in the dispatch list's terms
    (``edge.sync.contract.OperationMsg``): quantities in ``unit``, times in seconds."""

    work_center: str
    order_id: str
    operation: str
    material: str
    quantity: Decimal
    unit: str
    status: ErpStatus = "released"
    split: int = 0
    material_text: str = ""
    sequence: int = 0
    planned_setup_s: float = 0.0
    planned_run_s_per_unit: float = 0.0
    parts_per_signal: Decimal = Decimal(1)
    latest_end: str | None = None  # ISO 8601, UTC
    over_tolerance_pct: Decimal | None = None
    under_tolerance_pct: Decimal | None = None
    crew_size: Decimal | None = None
    confirmation_no: str | None = None
    status_text: str = ""  # why held or cancelled, in the ERP's words (shown to the operator)
    components: tuple[ErpComponent, ...] = ()

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.order_id, self.operation, self.split)


@dataclass(frozen=True, slots=True)
class SnapshotFailed:
    text: str


class OrderSource(abc.ABC):
    """Reads the released orders of an ERP."""

    system: ClassVar[str]

    @abc.abstractmethod
    async def snapshot(
        self, work_centers: Sequence[str]
    ) -> dict[str, list[ErpOperation]] | SnapshotFailed:
        """Every operation the ERP has now for each of ``work_centers`` (a work center with
        none maps to an empty list; one the ERP does not know, too)."""

    async def start(self) -> None:  # noqa: B027 - optional
        """Open connections; called once before the first snapshot."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Release what :meth:`start` opened."""
