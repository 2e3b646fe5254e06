"""How the machine state values of common OPC UA companion specifications read in plant words.

A template turns the raw value of a state node (a name or a number) into running, idle, down
or setup. ``[[sources.opcua]] state_map`` adds or overrides entries for a machine that deviates.
Names are matched without regard to case, spaces or underscores.

The ready ``[[sources.opcua]]`` blocks in ``config/opcua/`` write their node ids with the
namespace URI (``nsu=<uri>;s=...``, what ``edge browse`` shows), not the index (``ns=2;...``):
an index moves when the server registers another namespace first.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.domain.inputs import MachineState

R, W, D, S = MachineState.RUNNING, MachineState.IDLE, MachineState.DOWN, MachineState.SETUP

# OPC 40001-1 Machinery: MachineryItemState and MachineryOperationMode.
MACHINERY: dict[str, MachineState] = {
    "executing": R,
    "notexecuting": W,
    "outofservice": D,
    "notavailable": D,
    # operation mode node
    "setup": S,
    "maintenance": D,
    "processing": R,
}

# PackML (OPC 30050 / ISA-TR88.00.02) state names and numbers. Held is an internal problem of
# the machine (down); suspended is an external one, starved or blocked (idle).
_PACKML_STATES: tuple[tuple[int, str, MachineState], ...] = (
    (1, "clearing", D),
    (2, "stopped", D),
    (3, "starting", W),
    (4, "idle", W),
    (5, "suspended", W),
    (6, "execute", R),
    (7, "stopping", D),
    (8, "aborting", D),
    (9, "aborted", D),
    (10, "holding", D),
    (11, "held", D),
    (12, "unholding", D),
    (13, "suspending", W),
    (14, "unsuspending", W),
    (15, "resetting", W),
    (16, "completing", R),
    (17, "complete", W),
)
PACKML: dict[str, MachineState] = {
    **{name: state for _, name, state in _PACKML_STATES},
    **{str(number): state for number, _, state in _PACKML_STATES},
}

# Weihenstephan Standards build on PackML; their held sub-states say why a machine waits.
WEIHENSTEPHAN: dict[str, MachineState] = {
    **PACKML,
    "lack": W,
    "tailback": W,
    "lackbranchline": W,
    "tailbackbranchline": W,
    "equipmentfailure": D,
    "externalfailure": W,
    "prepared": W,
}

# EUROMAP 77/83 (injection moulding): production status, job status and machine mode.
EUROMAP77: dict[str, MachineState] = {
    "production": R,
    "jobinproduction": R,
    "startup": S,
    "setupactive": S,
    "setupinterrupted": D,
    "setupfinished": W,
    "startupactive": S,
    "noproduction": W,
    "readyforproduction": W,
    "dryrun": W,
    "jobinterrupted": D,
    "jobfinished": W,
    "teardownactive": S,
    "transferredassigned": W,
    "setup": S,
    "automatic": R,
    "semiautomatic": R,
    "manual": W,
    "sleep": W,
}

PLAIN: dict[str, MachineState] = {
    "running": R,
    "idle": W,
    "down": D,
    "setup": S,
    "true": R,  # a running bit
    "false": W,
    "1": R,
    "0": W,
}

TEMPLATES: dict[str, Mapping[str, MachineState]] = {
    "plain": PLAIN,
    "machinery": MACHINERY,
    "packml": PACKML,
    "weihenstephan": WEIHENSTEPHAN,
    "euromap77": EUROMAP77,
}


def _key(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(getattr(value, "Text", value))  # a LocalizedText reads as its text
    return "".join(ch for ch in text.lower() if ch not in " _-")


class StateTranslator:
    def __init__(self, template: str, overrides: Mapping[str, str] | None = None) -> None:
        self.table: dict[str, MachineState] = dict(TEMPLATES[template])
        for raw, state in (overrides or {}).items():
            self.table[_key(raw)] = MachineState(state)

    def translate(self, value: object) -> MachineState | None:
        """The plant's word for a raw state value, or None when the table does not know it."""
        return self.table.get(_key(value))
