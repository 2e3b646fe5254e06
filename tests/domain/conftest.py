"""Shared fixtures for the domain tests; the builders live in ``builders.py``."""

from __future__ import annotations

import pytest

from edge.domain.core import WorkCenter
from edge.domain.inputs import Action

from .builders import act, make_wc, spec


@pytest.fixture
def wc() -> WorkCenter:
    """A work center with operation 4711/0020 (1000 pcs, 10 s cycle) dispatched."""
    return make_wc(spec())


@pytest.fixture
def running(wc: WorkCenter) -> WorkCenter:
    """The same, with 4711/0020 running since 10:00:00."""
    act(wc, Action.START_PRODUCTION, 0)
    return wc
