"""The counter board's firmware: count pulses, answer the gateway as a Modbus RTU slave.

On the Pico this file runs at power-up. On the Unix port (the tests, a bench) run it as
``micropython main.py --fd N`` or ``--device PATH``; hw_unix.py lists the options.

The main loop waits for bytes on the serial line (at most 10 ms, or the silent interval while a
frame is coming in), cuts frames by silence, answers them, lets the debounce accept settled
levels, ticks the heartbeat once a second and feeds the watchdog. Counting itself happens in
interrupts (or a 1 kHz timer), never waiting for this loop.
"""

import sys

from counter import Channel
from modbus_rtu import Framer, Slave, silent_interval_us
from registers import (
    MAX_CHANNELS,
    ST_BAD_FRAME,
    ST_BOOT_NOT_STORED,
    ST_POLLED_INPUTS,
    ST_RX_OVERFLOW,
    Board,
)

import config

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython: only for importing this module in a test

    def ticks_add(ticks, delta):
        return ticks + delta

    def ticks_diff(new, old):
        return new - old


IDLE_WAIT_MS = 10


def settings():
    """config.py as a dict with lower-case keys (the hardware layer may override some)."""
    cfg = {}
    for name in dir(config):
        if name.isupper():
            cfg[name.lower()] = getattr(config, name)
    return cfg


def hardware_module():
    if sys.platform in ("linux", "darwin"):
        import hw_unix

        return hw_unix
    import hw_rp2

    return hw_rp2


def make_board(cfg, boot_count, reset_cause):
    pins = cfg["count_pins"]
    if len(pins) > MAX_CHANNELS:
        raise ValueError(f"at most {MAX_CHANNELS} count pins")
    channels = [Channel(cfg["debounce_ms"] * 1000) for _ in pins]
    state = None
    if cfg["state_pin"] is not None:
        state = Channel(cfg["state_debounce_ms"] * 1000)
    outputs = [False] * len(cfg["output_pins"])
    return Board(channels, state, outputs, boot_count, reset_cause)


def serve(hw, board, cfg):
    slave = Slave(cfg["unit_id"], board)
    board.slave = slave
    framer = Framer(silent_interval_us(cfg["baudrate"]))
    frame_wait_ms = framer.silent_us // 1000 + 1
    next_second = ticks_add(hw.ticks_ms(), 1000)

    def answer(frame):
        if frame is None:
            return
        reply = slave.handle(frame)
        if reply is not None:
            hw.write(reply)
        if slave.bad_frames:
            board.flag(ST_BAD_FRAME)

    while True:
        data = hw.read(frame_wait_ms if framer.pending() else IDLE_WAIT_MS)
        now = hw.ticks_us()
        if data:
            answer(framer.feed(data, now))
        answer(framer.poll(now))
        if framer.overflows:
            board.flag(ST_RX_OVERFLOW)
        hw.update()
        ms = hw.ticks_ms()
        while ticks_diff(ms, next_second) >= 0:
            board.second()
            next_second = ticks_add(next_second, 1000)
        hw.feed(board.heartbeat)


def main(argv):
    hw_mod = hardware_module()
    cfg = settings()
    hw_mod.configure(cfg, argv)
    hw = hw_mod.Hardware(cfg)
    if hw.maintenance():
        print("counter board: maintenance jumper set; firmware not started")
        return
    boot_count, reset_cause, stored = hw.boot_info()
    board = make_board(cfg, boot_count, reset_cause)
    if not stored:
        board.flag(ST_BOOT_NOT_STORED)
    hw.attach(board)
    if hw.polled:
        board.flag(ST_POLLED_INPUTS)
    serve(hw, board, cfg)


if __name__ == "__main__":
    main(sys.argv)
