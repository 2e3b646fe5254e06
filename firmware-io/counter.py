"""Pulse channels: debounce and a 32-bit counter per input. Pure logic, no hardware.

Runs on the board (MicroPython), on the Unix port and under CPython (the tests). Time comes in
as "ticks" in microseconds from the caller, compared only with ticks_diff, because the board's
tick counter wraps (every ~18 minutes at 2**30 microseconds).

Debounce: a new level counts only once it has been stable for ``debounce_us``. Edges report the
raw level; ``poll`` (called often from the main loop) accepts a level that has stayed long
enough. A bouncing contact therefore counts once, a glitch shorter than the debounce time never,
and a level misread in a late interrupt is put right by the next edge (the last edge of a burst
always reads the level that stays). A pulse and the gap after it must each be longer than the
debounce time.

``edge`` is called from a hard interrupt on the RP2040, where allocating memory is not allowed:
it only assigns small integers. That is why the counter is kept as two 16-bit halves (a Python
int above 2**30 would be a heap object) and why ``value()`` is only for the main loop.
"""

try:
    from time import ticks_diff
except ImportError:  # CPython (the tests): plain integers that never wrap

    def ticks_diff(new, old):
        return new - old


class Channel:
    """One input: its debounced level and, if it counts, a 32-bit counter of active edges."""

    def __init__(self, debounce_us, active=1, level=None):
        self.debounce_us = debounce_us
        self.active = active
        # The level at start is taken as settled: a line that is already active at power-up is
        # not a pulse.
        if level is None:
            level = 1 - active
        self.level = level  # debounced
        self.raw = level  # as last reported by an edge
        self.since = 0  # ticks of the last raw change
        self.hi = 0  # counter, high and low 16 bits
        self.lo = 0
        self.rejected = 0  # raw changes that did not last (bounce, glitches), 16-bit

    # -- fed by the hardware layer (interrupt-safe: no allocation)

    def edge(self, level, now):
        """The input changed (or an interrupt fired) and now reads ``level``."""
        if self.raw != self.level and ticks_diff(now, self.since) >= self.debounce_us:
            self._accept()
        if level != self.raw:
            if level == self.level:
                # back to the accepted level before the debounce time was up: a bounce
                self.rejected = (self.rejected + 1) & 0xFFFF
            self.raw = level
            self.since = now

    def poll(self, now):
        """Accept a level that has been stable long enough; call this often."""
        if self.raw != self.level and ticks_diff(now, self.since) >= self.debounce_us:
            self._accept()

    def sample(self, level, now):
        """The polled fallback: read the pin every tick and hand the level over."""
        if level != self.raw:
            self.edge(level, now)
        self.poll(now)

    def _accept(self):
        self.level = self.raw
        if self.level == self.active:
            lo = self.lo + 1
            if lo > 0xFFFF:
                self.lo = 0
                self.hi = (self.hi + 1) & 0xFFFF
            else:
                self.lo = lo

    # -- main loop only

    def value(self):
        return (self.hi << 16) | self.lo

    def preset(self, value):
        """Set the counter (the test register: force a 32-bit wrap without 4 billion pulses)."""
        self.hi = (value >> 16) & 0xFFFF
        self.lo = value & 0xFFFF

    def is_active(self):
        return self.level == self.active
