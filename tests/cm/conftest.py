"""Every cluster manager test runs on both stores: SQLite (the embedded default)
and PostgreSQL (a private server, tests/pg.py).  A test about one store's own
behaviour (a corrupt SQLite file) is marked `sqlite_only`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import harness


@pytest.fixture(autouse=True, params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "postgresql" and request.node.get_closest_marker("sqlite_only"):
        pytest.skip("about the SQLite store itself")
    harness.STORE["kind"] = request.param
    try:
        yield request.param
    finally:
        harness.STORE["kind"] = "sqlite"
