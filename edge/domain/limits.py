"""The bounds of every number the gateway accepts from outside, in one place.

The core refuses a value outside these bounds with a rejection naming the field and the value;
the contract's pydantic models (``edge/sync/contract.py``) use the same constants, so the
published JSON Schemas carry them and central IT sees them before sending. The bounds are far
beyond any real order or machine and close enough that arithmetic on them stays exact and fast:
a quantity of ``1E+999999`` would freeze the event loop in a ``quantize``, a ``parts_per_signal``
of ``1E-400`` would divide by zero, a version of ``10**30`` would leave no newer version.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

# Quantities (target, scrap, rework, reported, corrected), in the operation's unit.
MAX_QUANTITY: Final = Decimal(1_000_000_000)
# Decimal places of a quantity: enough for kg with grams and metres with millimetres to spare.
QUANTITY_PLACES: Final = 6
# A supervisor's count correction, either way.
MAX_DELTA: Final = Decimal(1_000_000)

# Parts per machine signal (a stroke with 4 cavities: 4; one signal per 1,000 parts: 1000;
# 1 signal per 0.5 m of wire: 0.5).
MIN_PARTS_PER_SIGNAL: Final = Decimal("0.0001")
MAX_PARTS_PER_SIGNAL: Final = Decimal(100_000)

# The ERP's standards: setup time of one operation and run time per unit, in seconds.
MAX_SETUP_S: Final = 30 * 24 * 3600.0  # 30 days
MAX_CYCLE_S: Final = 24 * 3600.0  # one day per unit
# Over- and under-delivery tolerances in percent.
MAX_TOLERANCE_PCT: Final = Decimal(1000)
# People working an operation (a crew of 0.5: one person minding two machines).
MAX_CREW: Final = Decimal(1000)

# Versions of dispatch lists and master data, sequence numbers, client timestamps: whole numbers
# a JSON consumer in any language reads exactly (2^53 - 1), which also covers a version made
# from milliseconds since 1970.
MAX_INT: Final = 2**53 - 1
# The position of an operation in the dispatch list (either way) and a split's number.
MAX_SEQUENCE: Final = 1_000_000_000
MAX_SPLIT: Final = 9999

# Partial confirmations: every N good parts (at least one part), every N minutes (at least one
# minute, at most a week).
MIN_EVERY_MINUTES: Final = 1.0
MAX_EVERY_MINUTES: Final = 7 * 24 * 60.0

# Texts: reasons in words, notes, material texts.
MAX_TEXT: Final = 200
# Operations central may merge into one in a single message (besides the one they join).
MAX_MERGE: Final = 50
# Catalogues from central: stop and scrap reasons, alarm mappings.
MAX_CATALOGUE: Final = 1000
# Maintenance intervals (edge.domain.machine): how many, and the largest interval of each
# measure (hours of running, starts, machine cycles, parts).
MAX_SERVICE_INTERVALS: Final = 32
MAX_SERVICE_HOURS: Final = Decimal(1_000_000)
MAX_SERVICE_COUNT: Final = Decimal(1_000_000_000_000)


def out_of_range(
    value: Decimal, low: Decimal, high: Decimal, *, places: int = QUANTITY_PLACES
) -> bool:
    """True if ``value`` is not finite, outside ``[low, high]`` or has more decimal places.

    Looks at the digits and the exponent only, so a value like ``1E+999999`` is judged at once
    instead of being expanded first."""
    if not value.is_finite():
        return True
    # adjusted() is the exponent of the most significant digit: cheap for any size.
    if value and not -places - 1 <= value.adjusted() <= high.adjusted() + 1:
        return True
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        return True
    return not low <= value <= high
