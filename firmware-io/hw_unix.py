"""The hardware layer on MicroPython's Unix port: the same firmware on a PC, for tests and trials.

    micropython main.py --fd 5            # the serial line on an inherited descriptor (pty master)
    micropython main.py --device /dev/ttyUSB0 --baud 19200
    options: --unit N  --channels N  --outputs N  --debounce-ms N  --no-state  --boot-file PATH

The pulse inputs are simulated: lines on standard input move the inputs, on a virtual clock in
microseconds (so a test can send 10,000 debounced pulses in a moment, and exact bounce timings):

    pulse CH N [HIGH_US [LOW_US]]   N clean pulses (default: each level debounce + 1 ms)
    edges CH DT:LEVEL ...           after DT us the input goes to LEVEL (1 = active), and so on
    wait US                         let US microseconds pass (settles what is pending)
    state LEVEL                     the state input goes to LEVEL and settles
    counts                          just the answer
    quit                            (end of standard input does the same)

Each command is answered on standard output with ``ok`` and every channel's counter, or
``err`` and the reason. ``ready`` is printed once the serial line is open; ``event coils`` when
the master switched outputs.
"""

import select
import sys
import time

from registers import RESET_POWER_ON, bump_boot_count

try:
    import termios
except ImportError:  # a Unix port built without it: --fd still works
    termios = None


def configure(cfg, argv):
    """Command-line options over config.py; the pins are only numbers here."""
    cfg["fd"] = None
    cfg["device"] = None
    cfg["boot_count_file"] = None
    cfg["parity"] = "N"
    cfg["de_pin"] = None
    args = list(argv[1:])
    while args:
        name = args.pop(0)
        if name == "--no-state":
            cfg["state_pin"] = None
            continue
        if not args:
            raise ValueError(f"{name} needs a value")
        value = args.pop(0)
        if name == "--fd":
            cfg["fd"] = int(value)
        elif name == "--device":
            cfg["device"] = value
        elif name == "--unit":
            cfg["unit_id"] = int(value)
        elif name == "--baud":
            cfg["baudrate"] = int(value)
        elif name == "--channels":
            cfg["count_pins"] = tuple(range(int(value)))
        elif name == "--outputs":
            cfg["output_pins"] = tuple(range(int(value)))
        elif name == "--debounce-ms":
            cfg["debounce_ms"] = int(value)
        elif name == "--boot-file":
            cfg["boot_count_file"] = value
        else:
            raise ValueError("unknown option " + name)
    if (cfg["fd"] is None) == (cfg["device"] is None):
        raise ValueError("give --fd N or --device PATH")


def _raw(fd, baudrate):
    if termios is None:
        return
    termios.setraw(fd)
    speed = getattr(termios, f"B{baudrate}", None)
    if speed is not None:  # a pty ignores the speed; a real port needs it
        attrs = termios.tcgetattr(fd)
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


class Hardware:
    polled = False  # inputs are driven by commands, not sampled

    def __init__(self, cfg):
        self.cfg = cfg
        self.ticks_us = time.ticks_us
        self.ticks_ms = time.ticks_ms
        # open for the process' whole life, so no context manager
        if cfg["fd"] is not None:
            self.port = open(cfg["fd"], "r+b")  # noqa: SIM115
        else:
            self.port = open(cfg["device"], "r+b")  # noqa: SIM115
            _raw(self.port.fileno(), cfg["baudrate"])
        self.port_poll = select.poll()
        self.port_poll.register(self.port, select.POLLIN)
        self.poll = select.poll()
        self.poll.register(self.port, select.POLLIN)
        self.poll.register(sys.stdin, select.POLLIN)
        # A board that just powered up has an empty receive buffer; what the master sent while
        # it was off is gone (on a pty it would still be waiting).
        self._drain()
        self.vt = 0  # the inputs' virtual clock, microseconds
        self.board = None

    def maintenance(self):
        return False

    def boot_info(self):
        path = self.cfg["boot_count_file"]
        if path is None:
            return 1, RESET_POWER_ON, False
        count, stored = bump_boot_count(path)
        return count, RESET_POWER_ON, stored

    def attach(self, board):
        self.board = board
        board.on_outputs = self._outputs
        print(f"ready unit={self.cfg['unit_id']} channels={len(board.channels)}")

    # -- the serial line

    def read(self, timeout_ms):
        data = b""
        for obj, event in self.poll.poll(timeout_ms):
            if obj is sys.stdin:
                self._command(sys.stdin.readline())
            elif event & select.POLLIN:
                data += self._drain()
            else:
                # Hang-up: nobody has the other end of the pty open. Wait rather than spin.
                time.sleep_ms(timeout_ms)
        return data

    def _drain(self):
        # One byte per read: the Unix port's read() waits for all it was asked for, and poll
        # only promises one byte.
        out = bytearray()
        while len(out) < 512 and self.port_poll.poll(0):
            try:
                chunk = self.port.read(1)
            except OSError:
                break
            if not chunk:
                break
            out.extend(chunk)
        return bytes(out)

    def write(self, data):
        self.port.write(data)

    def update(self):
        pass  # inputs only move on commands, and every command settles what it can

    def feed(self, heartbeat):
        pass  # no watchdog here

    def _outputs(self, address, values):
        levels = " ".join("1" if v else "0" for v in values)
        print(f"event coils {address} {levels}")

    # -- simulated inputs

    def _advance(self, us):
        self.vt = time.ticks_add(self.vt, us)
        board = self.board
        for ch in board.channels:
            ch.poll(self.vt)
        if board.state is not None:
            board.state.poll(self.vt)

    def _channel(self, text):
        index = int(text)
        if not 0 <= index < len(self.board.channels):
            raise ValueError(f"no channel {index}")
        return self.board.channels[index]

    def _command(self, line):
        if not line:
            sys.exit(0)  # the test closed our input
        words = line.split()
        if not words:
            return
        try:
            self._run(words)
        except (ValueError, IndexError) as exc:
            print(f"err {words[0]}: {exc}")
            return
        print("ok " + " ".join(str(ch.value()) for ch in self.board.channels))

    def _run(self, words):
        name = words[0]
        if name == "pulse":
            ch = self._channel(words[1])
            default = ch.debounce_us + 1000
            high = int(words[3]) if len(words) > 3 else default
            low = int(words[4]) if len(words) > 4 else high
            for _ in range(int(words[2])):
                self.vt = time.ticks_add(self.vt, low)
                ch.edge(1, self.vt)
                self.vt = time.ticks_add(self.vt, high)
                ch.edge(0, self.vt)
            self._advance(low)
        elif name == "edges":
            ch = self._channel(words[1])
            for step in words[2:]:
                dt, level = step.split(":")
                self.vt = time.ticks_add(self.vt, int(dt))
                ch.edge(int(level), self.vt)
        elif name == "wait":
            self._advance(int(words[1]))
        elif name == "state":
            state = self.board.state
            if state is None:
                raise ValueError("no state input")
            state.edge(int(words[1]), self.vt)
            self._advance(state.debounce_us)
        elif name == "quit":
            sys.exit(0)
        elif name != "counts":
            raise ValueError("unknown command")
