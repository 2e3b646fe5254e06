"""tests/firmware: the counter board firmware (firmware-io/), its logic and against the gateway."""

from __future__ import annotations

import sys

from .support import FIRMWARE

# The firmware's modules import each other by bare name (as on the board), so firmware-io/ goes
# on the path before the test modules import them.
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))
