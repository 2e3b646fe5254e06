"""Checks of the relay's settings that more than one ERP's settings make: a time zone name,
folders that must not be one another, and folders that must be there and usable."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, StringConstraints


def check_zone(value: str) -> str:
    """An IANA time zone name, or a ValueError saying it is not one."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None
    return value


def distinct_folders(named: Iterable[tuple[str, Path | None]]) -> dict[Path, str]:
    """The absolute folders of the settings ``(name, path)`` (None: not set), each to its
    setting's name; a ValueError when two settings name the same folder."""
    seen: dict[Path, str] = {}
    for setting, path in named:
        if path is None:
            continue
        where = Path(os.path.abspath(path))
        if where in seen:
            raise ValueError(f"{setting} and {seen[where]} must be different folders: {path}")
        seen[where] = setting
    return seen


def check_folders(section: str, folders: Iterable[tuple[str, Path, int]]) -> None:
    """Each ``(setting, folder, mode)`` is a folder this process may use in ``mode``
    (:func:`os.access` bits); else a ValueError naming ``section.setting`` and the folder: a
    missing mount or a typo is a configuration error, not something to retry."""
    for setting, path, mode in folders:
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise ValueError(f"{section}.{setting}: {path} {what}")
        if not os.access(path, mode):
            need = "writable" if mode & os.W_OK else "readable"
            raise ValueError(f"{section}.{setting}: {path} is not {need} by this process")


Zone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(check_zone)]
"""A setting that names the plant's IANA time zone."""
