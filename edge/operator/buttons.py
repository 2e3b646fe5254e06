"""Push buttons beside the machine: each press becomes one input, as ``button:<name>``.

A press is seen on gpiozero's thread (debounced like every GPIO input, see
:mod:`edge.sources.gpio`) and handed to the loop with ``call_soon_threadsafe``; everything else
happens on the loop. A button acts once it has been held for ``long_press_s``, or, for a short
press button, for ``bounce_ms``: a spike shorter than that never acts, and the level is read
again at that moment, so a press whose release edge was lost in contact bounce does not act
either. Holding on does nothing more; a release before the time cancels the press.

What each action submits (``op`` "" = the only active operation):

- ``start_setup``: the first released (dispatched) operation in dispatch order (``sequence``,
  then the key), as an operator at the machine would pick it; the core refuses it while another
  operation is active.
- ``start_production``: the active operation (setup -> running); with none active, the first
  released one, like ``start_setup``.
- ``interrupt``, ``resume``, ``complete``: the active operation.
- ``stop_reason_next``: nothing is submitted; the next stop reason of the master data becomes
  the ``choice`` (logged with its text), from the first again after the last.
- ``stop_reason_confirm``: the choice becomes the reason of the open stop (else of the latest
  stop still waiting for one); the choice is cleared once accepted.
- ``scrap_one``: one part of scrap with the button's ``reason``.
- ``call_help``: a call for help in the button's ``category``.

A refused press is logged with the core's message and changes nothing; no press, refused or
failing, ever stops the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from edge.config import ButtonEntry
from edge.domain.core import WorkCenter
from edge.domain.dispatch import dispatch_order
from edge.domain.inputs import (
    Action,
    CallForHelp,
    Input,
    ReportScrap,
    SetStopReason,
    Transition,
)
from edge.domain.model import OperationStatus
from edge.errors import EngineStopped, SourceUnavailable, StoreError
from edge.logging import Logger, get_logger
from edge.ports import FloorFace
from edge.sources.gpio import InputLine, open_with_retry, shared_factory

__all__ = ["ButtonPanel", "next_released"]

_TRANSITIONS = {
    "start_setup": Action.START_SETUP,
    "start_production": Action.START_PRODUCTION,
    "interrupt": Action.INTERRUPT,
    "resume": Action.RESUME,
    "complete": Action.COMPLETE,
}


def next_released(wc: WorkCenter) -> str | None:
    """The operation an operator would start next: the first dispatched one in dispatch order."""
    waiting = [op for op in wc.operations.values() if op.status is OperationStatus.DISPATCHED]
    if not waiting:
        return None
    return str(min(waiting, key=dispatch_order).key)


class ButtonPanel:
    """The ``[[operator.buttons]]``: their pins, their presses, and the stop reason chosen."""

    def __init__(
        self,
        buttons: Sequence[ButtonEntry],
        engine: FloorFace,
        *,
        pin_factory: str = "lgpio",
        factory: Any = None,
        logger: Logger | None = None,
    ) -> None:
        self.buttons = list(buttons)
        self.engine = engine
        self.factory_name = pin_factory
        self.factory = factory  # None: the process's shared factory of that kind, at start
        self.log: Logger = logger or get_logger("edge.buttons")
        self.status = "starting"
        self.last_error: str | None = None
        # The stop reason code stop_reason_next last showed; stop_reason_confirm gives it.
        self.choice: str | None = None
        self.presses = 0  # presses acted on (submitted or handled), for health and tests
        self._lines: dict[str, InputLine] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._acting: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def link_status(self) -> str:
        return self.status

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await open_with_retry(self._open, self._down)
        self.status = "ok"
        self.last_error = None
        self.log.info(
            "buttons ready", buttons={b.name: f"{b.action} on GPIO{b.pin}" for b in self.buttons}
        )
        try:
            await asyncio.Event().wait()
        finally:
            lines, self._lines = self._lines, {}
            for line in lines.values():
                with contextlib.suppress(Exception):  # a pin that fails to close is gone anyway
                    line.close()
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self.status = "stopped"
            # A press being submitted is already in the engine's queue, which is committed on
            # the way out; waiting for its answer here would only delay the shutdown.

    def _open(self) -> None:
        factory = self.factory if self.factory is not None else shared_factory(self.factory_name)
        lines: dict[str, InputLine] = {}
        try:
            for button in self.buttons:
                lines[button.name] = InputLine(button, factory, self._from_thread(button))
        except SourceUnavailable:
            for line in lines.values():
                line.close()
            raise
        self._lines = lines

    def _down(self, exc: SourceUnavailable) -> None:
        reason = str(exc)
        if self.status != "down" or self.last_error != reason:
            self.log.warning("buttons unavailable; retrying", reason=reason)
        self.status = "down"
        self.last_error = reason

    # ------------------------------------------------------------------ presses

    def _from_thread(self, button: ButtonEntry) -> Callable[[bool], None]:
        loop = self._loop
        assert loop is not None

        def on_edge(active: bool) -> None:
            # gpiozero's thread: hand over, nothing else
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(self._edge, button, active)

        return on_edge

    def _edge(self, button: ButtonEntry, active: bool) -> None:
        timer = self._timers.pop(button.name, None)
        if timer is not None:
            timer.cancel()
        if active and self._loop is not None:
            hold = max(button.long_press_s, button.bounce_ms / 1000)
            self._timers[button.name] = self._loop.call_later(hold, self._held, button)

    def _held(self, button: ButtonEntry) -> None:
        self._timers.pop(button.name, None)
        line = self._lines.get(button.name)
        if line is None or not line.is_active:
            self.log.debug("press too short; ignored", button=button.name)
            return
        self.presses += 1
        task = asyncio.get_running_loop().create_task(
            self.press(button), name=f"button-{button.name}"
        )
        self._acting.add(task)
        task.add_done_callback(self._acting.discard)

    async def press(self, button: ButtonEntry) -> None:
        """Do what ``button`` does, as if it was pressed now (the panel may call it too)."""
        actor = f"button:{button.name}"
        try:
            inp = self._input_for(button, actor)
            if inp is None:
                return
            outcome = await self.engine.submit(inp)
        except (EngineStopped, StoreError) as exc:
            self.log.error(
                "button press not stored", button=button.name, action=button.action, error=str(exc)
            )
            return
        except Exception:
            # A bug here must not take the gateway down with it: the panel still works.
            self.log.exception("button press failed", button=button.name, action=button.action)
            return
        if outcome.rejection is not None:
            self.log.warning(
                f"button press refused: {outcome.rejection.message}",
                button=button.name,
                action=button.action,
                code=outcome.rejection.code.value,
            )
            return
        self.log.info("button press applied", button=button.name, action=button.action)
        if button.action == "stop_reason_confirm":
            self.choice = None

    def _input_for(self, button: ButtonEntry, actor: str) -> Input | None:
        engine = self.engine
        wc = engine.work_center
        action = button.action
        if action in _TRANSITIONS:
            op = ""
            if action == "start_setup" or (action == "start_production" and not wc.active):
                found = next_released(wc)
                if found is None:
                    self.log.warning(
                        "button press refused: no operation is dispatched to start",
                        button=button.name,
                        action=action,
                    )
                    return None
                op = found
            return Transition(_TRANSITIONS[action], op, actor, engine.now())
        if action == "stop_reason_next":
            self._next_reason(button)
            return None
        if action == "stop_reason_confirm":
            if self.choice is None:
                self.log.warning(
                    "button press refused: choose a stop reason first (stop_reason_next)",
                    button=button.name,
                    action=action,
                )
                return None
            return SetStopReason(self.choice, actor, engine.now())
        if action == "scrap_one":
            assert button.reason is not None  # the config requires it for scrap_one
            return ReportScrap(Decimal(1), button.reason, actor, engine.now())
        assert button.category is not None  # call_help, the last action: the config requires it
        return CallForHelp(button.category, actor, engine.now())

    def _next_reason(self, button: ButtonEntry) -> None:
        reasons = self.engine.work_center.master_data.stop_reasons
        if not reasons:
            self.log.warning(
                "button press refused: the master data has no stop reasons",
                button=button.name,
                action=button.action,
            )
            return
        codes = [r.code for r in reasons]
        # From the first again when the catalogue changed under the current choice.
        i = (codes.index(self.choice) + 1) % len(codes) if self.choice in codes else 0
        self.choice = codes[i]
        self.log.info(
            "stop reason chosen",
            button=button.name,
            reason=reasons[i].code,
            text=reasons[i].text,
            position=f"{i + 1}/{len(codes)}",
        )
