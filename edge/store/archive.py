"""The archive retention writes before it deletes (``[retention] export_dir``).

What a prune step is about to delete (journal entries, events, finished outbox rows) is
appended to a gzip-compressed JSON-lines file first, flushed and fsynced, and only then
deleted, in the same step on the store's thread: a crash between the two leaves the rows in
the database, and the next step exports them again. So a row can appear twice in the archive;
``table`` and ``id`` (the journal's and events' id, the outbox's seq) identify it.

One line per row: ``{"table": "journal", "id": 17, "row": {<every column>}}``. Each step's
rows are one gzip member appended to the current file (``zcat`` reads the concatenation); the
file a process was killed while writing may end in a torn member, which :func:`read_archive`
leaves out (``zcat`` shows everything before it, then says "unexpected end of file"). Every
start of the gateway begins a new file, so no file is appended to after a torn member.

Files are named ``<prefix>-YYYYMMDD-HHMMSS.jsonl.gz`` (the UTC time of their first row's
export by the gateway's clock); a file reaching ``max_bytes`` is closed and a new one begun;
beyond ``keep_files`` the oldest (by name) are deleted. The folder is never created: a missing
folder (an unmounted USB stick, a typo) is a failure, not a reason to write to the SD card.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edge.errors import StoreError

SUFFIX = ".jsonl.gz"


class ExportFailed(StoreError):
    """Writing the archive failed; nothing of the step was deleted."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"exporting to {path} failed: {reason}")
        self.path = path
        self.reason = reason


class Archive:
    def __init__(self, folder: Path, prefix: str, *, max_bytes: int, keep_files: int) -> None:
        self.folder = folder
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.current: Path | None = None  # the file being appended to (this process's)
        self.rows_written = 0
        self._name = re.compile(rf"^{re.escape(prefix)}-\d{{8}}-\d{{6}}(-\d+)?{re.escape(SUFFIX)}$")

    def files(self) -> list[Path]:
        """This gateway's archive files in the folder, oldest first."""
        return sorted(
            (p for p in self.folder.iterdir() if self._name.match(p.name)), key=lambda p: p.name
        )

    def exporter(self, wall_ms: int) -> Callable[[str, str, list[dict[str, Any]]], None]:
        """An ``edge.store.retention.Exporter`` naming new files by ``wall_ms``."""

        def export(table: str, key: str, rows: list[dict[str, Any]]) -> None:
            self.append(table, key, rows, wall_ms)

        return export

    def append(self, table: str, key: str, rows: Sequence[dict[str, Any]], wall_ms: int) -> Path:
        """Append ``rows`` of ``table`` (``key`` is the column that identifies them) and make
        them durable; raises :class:`ExportFailed` naming the file and the error."""
        lines = "".join(
            json.dumps(
                {"table": table, "id": row[key], "row": row},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            + "\n"
            for row in rows
        )
        # Level 6 (gzip's default): rows are written once and kept for years.
        member = gzip.compress(lines.encode(), compresslevel=6, mtime=0)
        path = self.current
        try:
            if path is None or _size(path) >= self.max_bytes:
                path = self._new_file(wall_ms)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                view = memoryview(member)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            where = path if path is not None else self.folder
            raise ExportFailed(where, f"{exc.strerror or exc} ({type(exc).__name__})") from exc
        self.rows_written += len(rows)
        return path

    def _new_file(self, wall_ms: int) -> Path:
        """Begin a new file (the folder must exist), then delete the oldest beyond keep_files."""
        if not self.folder.is_dir():
            if self.folder.exists():
                raise NotADirectoryError(20, "not a folder", str(self.folder))
            raise FileNotFoundError(2, "no such folder (it is never created)", str(self.folder))
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(wall_ms / 1000))
        path = self.folder / f"{self.prefix}-{stamp}{SUFFIX}"
        n = 1
        while path.exists():
            n += 1
            path = self.folder / f"{self.prefix}-{stamp}-{n}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.close(fd)
        self.current = path
        old = [p for p in self.files() if p != path]
        for stale in old[: max(0, len(old) - (self.keep_files - 1))]:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        _fsync_dir(self.folder)
        return path


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # deleted by someone: a new file
        return 1 << 62


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_archive(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one archive file, member by member; a torn last member is left out."""
    data = path.read_bytes()
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            text = inflater.decompress(data)
        except zlib.error:
            return  # damaged from here on: what came before is whole
        if not inflater.eof:
            return  # the torn member of a killed process
        for line in text.decode().splitlines():
            if line:
                record: dict[str, Any] = json.loads(line)
                yield record
        data = inflater.unused_data
