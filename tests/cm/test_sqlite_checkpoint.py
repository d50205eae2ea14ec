"""The SQLite store's WAL is copied into the database by a thread of its own,
never inside a commit (which runs under the cluster's lock)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from tashi.cm import store as store_mod
from tashi.cm.store import Batch, SqliteStore
from tests.harness import wait_for

BODY = os.urandom(100_000)  # incompressible, and larger than a page: many WAL frames


def commits(store: SqliteStore, first: int, count: int) -> None:
    for k in range(first, first + count):
        store.commit(Batch(puts=[("instance", k, BODY)], events=[(k, b"e")]))


def test_commits_never_checkpoint_and_the_checkpointer_keeps_the_wal_small(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "CHECKPOINT_SECONDS", 0.05)
    monkeypatch.setattr(store_mod, "RESTART_PAGES", 1024)  # 4 MiB
    path = tmp_path / "cm.db"
    store = SqliteStore(path)
    wal = Path(f"{path}-wal")
    try:
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        # 40 MB written by commits one after another, as a busy CM makes them
        # (a turn of the lock between two): the WAL starts over all the same.
        largest = 0
        for k in range(1, 401):
            commits(store, k, 1)
            largest = max(largest, wal.stat().st_size)
            time.sleep(0.002)
        assert largest < 20 * 2**20, f"the WAL grew to {largest / 2**20:.0f} MiB"
        # Everything written reached the database file itself.
        wait_for(lambda: path.stat().st_size > 39 * 2**20, what="pages copied into the db")
    finally:
        store.close()
    assert not wal.exists() or wal.stat().st_size == 0
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM resources").fetchone()[0] == 400
    db.close()


def test_a_store_in_memory_has_no_checkpointer() -> None:
    store = SqliteStore(":memory:")
    assert store._checkpointer is None
    store.commit(Batch(puts=[("instance", 1, b"x")]))
    store.close()
