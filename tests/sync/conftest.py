"""Fixtures for the MQTT contract tests: a private mosquitto per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators.broker import Mosquitto, find_mosquitto


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    try:
        find_mosquitto()
    except FileNotFoundError as exc:  # pragma: no cover - the test scripts install it
        pytest.skip(str(exc))
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as running:
        yield running
