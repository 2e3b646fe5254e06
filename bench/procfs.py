"""What the benchmarks read of their processes from /proc (Linux): the process tree, CPU
seconds, resident memory, and a log's last lines. One home for the benches that run servers
and gateways as child processes (``bench/e2e.py``, ``bench/relay.py``)."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of every thread of ``pid`` so far; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system, every thread) of the tree so far."""
    return sum(cpu_seconds(pid) or 0.0 for pid in process_tree(root))


def io_write_bytes(pid: int) -> int:
    """Bytes ``pid`` (every thread) caused to be written to storage so far (``write_bytes`` of
    ``/proc/<pid>/io``: what reaches the block layer, fsyncs and page-cache writeback included,
    counted when the page is dirtied); 0 when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_write_bytes(root: int) -> int:
    """``io_write_bytes`` summed over the tree."""
    return sum(io_write_bytes(pid) for pid in process_tree(root))


def mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB; zeros when it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss / 1024, hwm / 1024


def tree_mem_mb(root: int) -> tuple[float, float]:
    """(RSS now, sum of the processes' peak RSS) of the tree, MB."""
    rss = hwm = 0.0
    for pid in process_tree(root):
        now, peak = mem_mb(pid)
        rss += now
        hwm += peak
    return rss, hwm


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def child_env(root: Path, **extra: str) -> dict[str, str]:
    """Children run ``root``'s gateway and simulators, whatever else is installed."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(root) + (os.pathsep + path if path else "")}
    env.update(extra)
    return env
