"""Durable store of the cluster manager.

One interface (`Store`) so a PostgreSQL store can be added without touching
the handlers; `SqliteStore` is the default.  The CM keeps the whole cluster in
memory and writes every change through a `Batch` committed in one
transaction: resources, the events describing them, the answer to the
request (for request_id retries) and id counters go together, so a CM
killed at any point restarts with exactly what it acknowledged.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Resource kinds stored as serialized protobuf blobs, keyed by id.
KINDS = ("host", "instance", "network", "user", "token", "image")


class StoreError(Exception):
    """A store that cannot be used at all; the message says which and why."""


@dataclass
class Batch:
    """Everything one turn of the cluster's lock writes (cm/commits.py), committed
    atomically."""

    puts: list[tuple[str, int, bytes]] = field(default_factory=list)
    deletes: list[tuple[str, int]] = field(default_factory=list)
    events: list[tuple[int, bytes]] = field(default_factory=list)
    # Answers to the requests made with a request_id: (request_id, method, response).
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    meta: dict[str, int] = field(default_factory=dict)


@dataclass
class Loaded:
    resources: dict[str, list[bytes]]
    meta: dict[str, int]
    first_seq: int
    last_seq: int
    recent_events: list[tuple[int, bytes]]


class Store(ABC):
    # Whether several CMs may share this store, one leading at a time (a lease).
    shared = False

    def try_lead(self, name: str) -> bool:
        """Become the one CM that writes (always, for a store only one CM opens)."""
        return True

    def leader(self) -> str:
        """Where the CM holding the lease serves ('' for none or a private store)."""
        return ""

    def renew(self) -> None:
        """Extend the lease (raises StoreError subclass LeaseLost when it is gone)."""
        return None

    def resign(self) -> None:
        """Give the lease up (an orderly stop)."""
        return None

    @abstractmethod
    def load(self, recent: int) -> Loaded: ...

    @abstractmethod
    def commit(self, batch: Batch) -> None: ...

    @abstractmethod
    def request(self, request_id: str) -> tuple[str, bytes] | None: ...

    @abstractmethod
    def request_ids(self) -> set[str]: ...

    @abstractmethod
    def events_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]: ...

    @abstractmethod
    def prune(self, keep_events_from: int, requests_before: float) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, id INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, method TEXT NOT NULL, response BLOB NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


# How often the checkpointer copies the WAL into the database, and how many WAL
# pages make it copy the last ones while no commit runs, so the WAL starts over.
CHECKPOINT_SECONDS = 1.0
RESTART_PAGES = 4096


class SqliteStore(Store):
    """SQLite in WAL mode.

    `synchronous=NORMAL` (default) survives a killed process, which is what
    the CM promises; `sync="full"` also survives power loss, at an fsync per
    commit.

    The WAL is copied into the database by a thread of its own (`_checkpoint`,
    its own connection, every CHECKPOINT_SECONDS), never by a commit: SQLite's
    automatic checkpoint runs inside the commit that fills the WAL, under the
    cluster's lock, and with its fsyncs it held that lock for 1.2 to 4.5 s at a
    time while bench_fleet's churn ran (tashi.cm.commits logged "1 changes made
    in 0.09s ... the rest storing them" for a 4.48 s turn).  A passive
    checkpoint runs beside commits.  The WAL starts over only once it is all
    copied when a commit begins, which under steady commits never happens; so
    once it holds RESTART_PAGES, the pages written since the last pass are
    copied while no commit runs (holding the store's lock for that remainder).
    """

    def __init__(self, path: str | Path, sync: str = "normal") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            file = Path(self.path)
            file.parent.mkdir(parents=True, exist_ok=True)
            if file.exists() and file.stat().st_size == 0:
                raise StoreError(f"the store {file} is an empty file (a failed copy?); move it "
                                 "away to start a new cluster, or restore it")
        self._sync = "FULL" if sync == "full" else "NORMAL"
        try:
            self._db = self._connect()
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the store {self.path} cannot be opened: {exc}") from None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.path != ":memory:":
            self._checkpointer = threading.Thread(target=self._checkpoint, daemon=True,
                                                  name="sqlite-checkpoint")
            self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._sync}")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA cache_size=-65536")
        # No checkpoint inside a commit (unless the store is in memory): _checkpoint.
        db.execute(f"PRAGMA wal_autocheckpoint={8192 if self.path == ':memory:' else 0}")
        return db

    def _checkpoint(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=10000")
            while not self._closing.wait(CHECKPOINT_SECONDS):
                try:
                    _busy, pages, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if pages >= RESTART_PAGES:
                        with self._lock:
                            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy, or the disk: the next round tries again
                    log.warning("could not checkpoint the store's WAL: %s", exc)
        finally:
            db.close()

    def load(self, recent: int) -> Loaded:
        with self._lock:
            resources: dict[str, list[bytes]] = {k: [] for k in KINDS}
            for kind, body in self._db.execute(
                    "SELECT kind, body FROM resources ORDER BY kind, id"):
                resources.setdefault(kind, []).append(body)
            meta = dict(self._db.execute("SELECT key, value FROM meta"))
            lo, hi = self._db.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
            last = max(hi or 0, meta.get("last_seq", 0))
            first = lo if lo is not None else last + 1
            rows = self._db.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq", (last - recent,)
            ).fetchall()
            return Loaded(resources, meta, first, last, rows)

    def commit(self, batch: Batch) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if batch.puts:
                    db.executemany(
                        "INSERT OR REPLACE INTO resources (kind, id, body) VALUES (?, ?, ?)",
                        batch.puts,
                    )
                if batch.deletes:
                    db.executemany("DELETE FROM resources WHERE kind = ? AND id = ?", batch.deletes)
                if batch.events:
                    db.executemany("INSERT INTO events (seq, body) VALUES (?, ?)", batch.events)
                if batch.requests:
                    at = time.time()
                    db.executemany(
                        "INSERT INTO requests (request_id, method, response, at) VALUES (?,?,?,?)",
                        [(rid, method, body, at) for rid, method, body in batch.requests],
                    )
                if batch.meta:
                    db.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        list(batch.meta.items()),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def request(self, request_id: str) -> tuple[str, bytes] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT method, response FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def request_ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT request_id FROM requests")}

    def events_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._db.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()

    def prune(self, keep_events_from: int, requests_before: float) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM events WHERE seq < ?", (keep_events_from,))
            self._db.execute("DELETE FROM requests WHERE at < ?", (requests_before,))
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            self._db.close()


def open_store(url: str, sync: str = "normal", lease_seconds: float = 5.0) -> Store:
    """`path/to/file.db` or `sqlite:///path` for SQLite (the embedded default),
    `postgresql://user@host/db` for PostgreSQL (cm/pgstore.py: several CMs, one
    leading)."""
    if url.startswith(("postgresql://", "postgres://")):
        from tashi.cm.pgstore import PostgresStore  # only when asked for
        return PostgresStore(url, lease_seconds=lease_seconds)
    if url.startswith("sqlite://"):
        url = url[len("sqlite://"):]
        url = url[1:] if url.startswith("//") else url
    elif "://" in url:
        raise ValueError(f"store URL {url!r}: give a SQLite file or a postgresql:// URL")
    return SqliteStore(url, sync=sync)
