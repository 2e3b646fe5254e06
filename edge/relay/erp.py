"""What the relay asks of an ERP and what an ERP answers: the one interface every ERP adapter
implements (adding an ERP = one module with an :class:`ErpAdapter` and its settings, plus a
stand-in in ``simulators/erp/``).

The relay hands an adapter a :class:`Posting` (a confirmation or a reversal a gateway sent, read
and bounded) and gets an :data:`Outcome` back:

- :class:`Posted`: the ERP has the document now; ``keys`` are its numbers (SAP
  ``confirmation_group``/``confirmation_count``, a D365 journal, a file name). Final.
- :class:`Rejected`: the ERP refused it for a reason in the data or in the ERP (order locked
  for good, already finally confirmed, over tolerance). ``text`` is the ERP's own text, shown
  to the operator as is. Final until a person resubmits it (``edge relay failed``).
- :class:`Transient`: not now (timeout, connection refused, 5xx, order locked by a user for a
  moment); the relay retries with backoff. The ERP did not take it.
- :class:`Unknown`: the request may or may not have reached the ERP (the connection broke
  after the request was sent, a timeout waiting for the answer). The relay treats the posting
  as *in doubt*: it asks :meth:`ErpAdapter.lookup` before posting again, and where the ERP
  cannot be asked it leaves it for a person.
- :class:`Submitted`: taken for asynchronous processing (D365's message queue, a file in a drop
  folder the ERP acknowledges later); the relay calls :meth:`ErpAdapter.poll` with ``ref``
  until it says something else.

An adapter never raises for what the ERP or the network does: every failure is one of these
outcomes, with a text that names what happened. (A bug in the adapter may still raise; the relay
then treats the attempt as :class:`Unknown`.)
"""

from __future__ import annotations

import abc
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar, Literal

Kind = Literal["confirmation", "reversal"]


@dataclass(frozen=True, slots=True)
class Quantity:
    code: str
    qty: Decimal


@dataclass(frozen=True, slots=True)
class GoodsMovement:
    """A component consumed (``issue``) or given back (``return``) with a confirmation; the
    quantity is positive, in ``unit``; ``batch`` empty for none."""

    material: str
    qty: Decimal
    unit: str
    direction: Literal["issue", "return"] = "issue"
    batch: str = ""
    item: str | None = None
    backflush: bool = False


GoodsMovementsMode = Literal["recorded", "all", "none"]
"""``[erp] goods_movements``: which of a posting's goods movements the adapter sends, so that
every consumed quantity reaches the ERP exactly once:

- ``recorded`` (the default): only those of components not backflushed; the ERP backflushes
  the others itself by its BOM, as it does without the relay.
- ``all``: every movement, and the ERP is told not to backflush (SAP
  ``APIConfHasNoGoodsMovements``, D365 ``BOMConsumption``/``AutomaticBOMConsumptionRule``).
- ``none``: none; the ERP books consumption itself (backflush, or people posting issues).
"""

GOODS_MOVEMENTS_DEFAULT: GoodsMovementsMode = "recorded"


def movements_to_post(
    movements: tuple[GoodsMovement, ...], mode: GoodsMovementsMode
) -> tuple[GoodsMovement, ...]:
    """The movements an adapter sends under ``mode`` (in their order; one of quantity 0 moves
    nothing and is left out)."""
    if mode == "none":
        return ()
    return tuple(m for m in movements if m.qty > 0 and (mode == "all" or not m.backflush))


@dataclass(frozen=True, slots=True)
class Posting:
    """One confirmation or reversal to post, as the relay read it from a gateway's message.

    Quantities are exact decimals in ``unit``; times are milliseconds since the Unix epoch
    (UTC). For a reversal, the quantities are those of the confirmation it reverses and
    ``reverses_keys`` are the ERP keys that confirmation was posted with (empty when the relay
    does not know them: the adapter may then find them with ``reverses_idem_key``).
    """

    kind: Kind
    idem_key: str
    edge_id: str
    root: str
    seq: int
    work_center: str
    order_id: str
    operation: str
    split: int
    conf_index: int
    event_ms: int
    yield_qty: Decimal
    scrap_qty: Decimal
    rework_qty: Decimal
    scrap_by_reason: tuple[Quantity, ...] = ()
    rework_by_reason: tuple[Quantity, ...] = ()
    unit: str = ""
    material: str = ""
    confirmation_no: str | None = None
    final: bool = False
    variance_reason: str | None = None
    posting_date: str = ""  # YYYY-MM-DD, the plant's local date of the period's end
    period_start_ms: int | None = None
    period_end_ms: int | None = None
    setup_s: float = 0.0
    machine_s: float = 0.0
    labour_s: float = 0.0
    actor: str = ""
    reverses_idem_key: str | None = None
    reverses_keys: Mapping[str, str] = field(default_factory=dict)
    goods_movements: tuple[GoodsMovement, ...] = ()
    batch: str | None = None  # the batch the ERP gave the produced quantity
    resubmission: int = 0
    """How often a person resubmitted it after the ERP rejected it (``edge relay failed``)."""

    @property
    def instance_key(self) -> str:
        """``idem_key``, and for a resubmission ``<idem_key>|resubmit|<n>``: an ERP that keeps
        what it refused under its id (a D365 message, an answer file) sees the resubmission
        as new, while a resend of the same attempt keeps its id."""
        if self.resubmission:
            return f"{self.idem_key}|resubmit|{self.resubmission}"
        return self.idem_key

    @property
    def external_id(self) -> str:
        """A GUID made from :attr:`instance_key`: what an ERP's external-id field (SAP
        ``ExternalSystemConfirmation``, a D365 message id) stores, so the relay can ask the ERP
        later whether this posting is there. The same key always gives the same GUID."""
        return external_id(self.instance_key)

    @property
    def label(self) -> str:
        """``1000123/0010#4`` (split ``/1`` when not 0): for texts the ERP shows."""
        split = f"/{self.split}" if self.split else ""
        return f"{self.order_id}/{self.operation}{split}#{self.conf_index}"


def external_id(idem_key: str) -> str:
    """The GUID for an idempotency key (a version-5-style name, the first 16 bytes of its
    SHA-256 with the version and variant bits set)."""
    digest = hashlib.sha256(idem_key.encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=5))


@dataclass(frozen=True, slots=True)
class Posted:
    keys: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Rejected:
    text: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Transient:
    text: str
    code: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    text: str


@dataclass(frozen=True, slots=True)
class Submitted:
    ref: Mapping[str, str]
    poll_after_s: float = 1.0


@dataclass(frozen=True, slots=True)
class NotFound:
    """:meth:`ErpAdapter.lookup`: the ERP has no document for this posting."""


Outcome = Posted | Rejected | Transient | Unknown | Submitted
LookupOutcome = Posted | NotFound | Transient | Submitted


class ErpAdapter(abc.ABC):
    """One ERP. Instances are used from one asyncio loop; calls for different operations may run
    at the same time (the relay bounds how many)."""

    system: ClassVar[str]
    """``sap``, ``d365``, ``file``: the ``system`` key of every ``erp`` answer."""

    can_lookup: bool = False
    """Whether :meth:`lookup` can tell if a posting is in the ERP (by a field the ERP stores
    and can be filtered on); a class default an instance may turn off. Without it, a posting
    in doubt is left for a person."""

    @abc.abstractmethod
    async def post(self, posting: Posting) -> Outcome:
        """Post a confirmation (``posting.kind == "confirmation"``)."""

    @abc.abstractmethod
    async def reverse(self, posting: Posting) -> Outcome:
        """Cancel the posting of ``posting.reverses_idem_key`` (``posting.kind == "reversal"``)."""

    async def lookup(self, posting: Posting) -> LookupOutcome:
        """Is this posting (confirmation or reversal) in the ERP? Only when ``can_lookup``."""
        raise NotImplementedError(f"{self.system} cannot be asked for a posting")

    async def poll(self, posting: Posting, ref: Mapping[str, str]) -> Outcome:
        """What became of a :class:`Submitted` posting."""
        raise NotImplementedError(f"{self.system} does not take postings asynchronously")

    async def start(self) -> None:  # noqa: B027 - optional
        """Open connections, log in; called once before the first post."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Release what :meth:`start` opened."""
