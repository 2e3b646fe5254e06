"""Fixtures for the relay's tests: a real PostgreSQL (tests/pg.py) for the shared ledger.

``pg_cluster``: one server for the whole test session, started the first time a test asks for
it. ``pg_dsn``: a fresh, empty database on it for each test (dropped afterwards). ``pg_private``:
a server of the test's own, for the tests that stop, crash or restart it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest

from tests.pg import PostgresCluster, PostgresNotFound
from tests.sync.conftest import broker  # noqa: F401 - a private mosquitto for the relay

_numbers = itertools.count(1)


def _cluster() -> PostgresCluster:
    try:
        return PostgresCluster()
    except PostgresNotFound as exc:  # pragma: no cover - scripts/test installs PostgreSQL
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    with _cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(pg_cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """The DSN of an empty database made for this test alone."""
    if not pg_cluster.running:  # an earlier test stopped the shared server and failed
        pg_cluster.start()
    label = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40].strip("_")
    name = f"t{next(_numbers)}_{label}"
    dsn = pg_cluster.create_database(name)
    yield dsn
    if pg_cluster.running:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_private() -> Iterator[PostgresCluster]:
    """A server of this test's own (a fraction of a second to start), free to stop and crash."""
    with _cluster() as cluster:
        yield cluster
