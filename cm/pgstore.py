"""The PostgreSQL store (`--db postgresql://...`) and the CM leader's lease in it.

Same schema and semantics as the SQLite store: a change, its events, the
request's answer and the id counters commit in one transaction.  Several
`tashi-cm` processes may point at one database; one holds the lease (a row
with a holder, an epoch and an expiry, by the database's clock) and is the
only one that writes:

- the leader renews the lease every third of its length;
- every commit first extends the lease *in the same transaction*, on the
  condition that this process still holds it unexpired with its epoch; if not,
  the transaction writes nothing and the store raises `LeaseLost`.  So a paused
  old leader (SIGSTOP, a long GC, a partition) that wakes after a standby took
  over cannot write: its epoch is stale (fencing).
- a standby takes the lease once it has expired, with the epoch incremented.
- a leader paused *inside* a transaction holds the lease row's lock, which
  would keep every standby waiting for as long as the pause lasts.  So the row
  names the leader's database session (`pid`), and a standby that cannot lock
  the row while its committed lease has expired ends that session
  (`pg_terminate_backend`; both CMs connect as one role, or the standby's has
  `pg_signal_backend`), which rolls the stuck transaction back.  As a second
  line, each session's `idle_in_transaction_session_timeout` is the lease's
  length (PostgreSQL arms it only between whole statements, not inside a
  pipeline such as `executemany`'s, hence the first).  The woken process finds
  its connection gone, reconnects, and its next renewal or commit sees the
  stale epoch.

PostgreSQL's own streaming replication keeps the database itself available;
this file does not replicate anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import psycopg.errors

from tashi.cm.store import KINDS, Batch, Loaded, Store, StoreError

log = logging.getLogger("tashi.cm.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, id BIGINT NOT NULL, body BYTEA NOT NULL, PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS events (seq BIGINT PRIMARY KEY, body BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, method TEXT NOT NULL, response BYTEA NOT NULL,
    at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS leader (
    id INT PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, epoch BIGINT NOT NULL,
    expires TIMESTAMPTZ NOT NULL);
INSERT INTO leader (id, holder, epoch, expires) VALUES (1, '', 0, now())
    ON CONFLICT (id) DO NOTHING;
ALTER TABLE leader ADD COLUMN IF NOT EXISTS pid INT NOT NULL DEFAULT 0;
"""

# What the CMs' sessions call themselves: a standby ends only such a session.
APPLICATION = "tashi-cm"

# Two CMs starting at once both run SCHEMA; this lock keeps them apart.
SCHEMA_LOCK = 0x7461736869  # "tashi"


class LeaseLost(StoreError):
    """This process no longer holds the lease: it must not write, and steps down."""

    deposed = True


@dataclass(frozen=True)
class Holder:
    name: str  # where this CM serves (host:port), shown to clients of standbys
    epoch: int


def _connect(url: str, lease_seconds: float) -> psycopg.Connection:
    """A session whose open transactions PostgreSQL ends after the lease's length
    without a statement, and whose lock waits give up after a fifth of it."""
    idle_ms, lock_ms = max(200, int(lease_seconds * 1000)), max(50, int(lease_seconds * 200))
    try:
        db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        db.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false), "
                   "set_config('lock_timeout', %s, false), "
                   "set_config('application_name', %s, false)",
                   (str(idle_ms), str(lock_ms), APPLICATION))
        return db
    except psycopg.Error as exc:
        raise StoreError(f"the store {redact(url)} cannot be opened: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def redact(url: str) -> str:
    """The URL without a password, for messages and logs."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url


class PostgresStore(Store):
    shared = True

    def __init__(self, url: str, lease_seconds: float = 5.0) -> None:
        self.url = url
        self.lease_seconds = lease_seconds
        self._db = _connect(url, lease_seconds)
        self._lock = threading.Lock()
        self.holder: Holder | None = None
        try:
            with self._db.transaction():
                self._db.execute("SET LOCAL lock_timeout = '60s'")  # the other CM's schema
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                self._db.execute(SCHEMA)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(f"the store {redact(url)} cannot be set up: {exc}") from None

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection]:
        """The connection, under the lock; opened again if PostgreSQL ended it (a
        restart, or our own transaction left idle past the lease: see above).
        Database failures come out as StoreError."""
        with self._lock:
            try:
                if self._db.closed or self._db.broken:
                    self._db = _connect(self.url, self.lease_seconds)
                    if self.holder is not None:  # a standby must find this session
                        self._db.execute("UPDATE leader SET pid = pg_backend_pid() "
                                         "WHERE id = 1 AND holder = %s AND epoch = %s",
                                         (self.holder.name, self.holder.epoch))
                yield self._db
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL: {_first_line(exc)}") from None

    # -- the lease ----------------------------------------------------------------
    def try_lead(self, name: str) -> bool:
        """Take the lease if it is free or expired, or held under our own name (a
        CM restarted in place: the old process, if it still lives, is fenced out by
        the new epoch); then every commit is fenced by the epoch taken here.  False
        also while the leader's transaction holds the row past our lock timeout."""
        with self._session() as db:
            try:
                row = db.execute(
                    "UPDATE leader SET holder = %s, epoch = epoch + 1, pid = pg_backend_pid(), "
                    "expires = now() + make_interval(secs => %s) "
                    "WHERE id = 1 AND (expires < now() OR holder = '' OR holder = %s) "
                    "RETURNING epoch", (name, self.lease_seconds, name)).fetchone()
            except psycopg.errors.LockNotAvailable:
                self._end_stuck_leader(db)
                return False
            if row is None:
                return False
            self.holder = Holder(name, int(row[0]))
            return True

    @staticmethod
    def _end_stuck_leader(db: psycopg.Connection) -> None:
        """The row is locked by an open transaction.  If the lease it holds has
        expired as committed, that transaction belongs to a leader stopped in the
        middle of a commit: end its session, so its transaction rolls back."""
        try:
            # Joined with the sessions alive now, under the CMs' name: a pid the
            # server has since given to another client is never ended.
            row = db.execute("SELECT l.pid, pg_terminate_backend(l.pid) FROM leader l "
                             "JOIN pg_stat_activity a ON a.pid = l.pid "
                             "AND a.application_name = %s "
                             "WHERE l.id = 1 AND l.expires < now() AND l.pid <> 0 "
                             "AND l.pid <> pg_backend_pid()", (APPLICATION,)).fetchone()
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("cannot end the stuck leader's session: %s", _first_line(exc))
            return
        if row is not None and row[1]:
            log.warning("ended database session %s: it held the lease row past the lease",
                        row[0])

    def leader(self) -> str:
        """Who holds an unexpired lease ('' when nobody)."""
        with self._session() as db:
            row = db.execute(
                "SELECT holder FROM leader WHERE id = 1 AND expires >= now()").fetchone()
        return str(row[0]) if row else ""

    def _extend(self, cur: psycopg.Cursor) -> None:  # type: ignore[type-arg]
        holder = self.holder
        if holder is None:
            raise LeaseLost("this cluster manager does not hold the lease")
        cur.execute("UPDATE leader SET expires = now() + make_interval(secs => %s) "
                    "WHERE id = 1 AND holder = %s AND epoch = %s AND expires >= now()",
                    (self.lease_seconds, holder.name, holder.epoch))
        if cur.rowcount != 1:
            self.holder = None
            raise LeaseLost(f"the lease (epoch {holder.epoch}) expired or was taken over; "
                            "nothing was written")

    def renew(self) -> None:
        """Extend the lease; LeaseLost when it is gone, StoreError when the
        database cannot be reached (the lease may still be ours: try again)."""
        with self._session() as db, db.transaction(), db.cursor() as cur:
            self._extend(cur)

    def resign(self) -> None:
        """Give the lease up at once (an orderly stop), so a standby need not wait."""
        with self._session() as db:
            holder, self.holder = self.holder, None
            if holder is not None:
                db.execute("UPDATE leader SET expires = now() - interval '1 second' "
                           "WHERE id = 1 AND holder = %s AND epoch = %s",
                           (holder.name, holder.epoch))

    # -- the Store interface ------------------------------------------------------
    def load(self, recent: int) -> Loaded:
        with self._session() as db:
            resources: dict[str, list[bytes]] = {k: [] for k in KINDS}
            for kind, body in db.execute("SELECT kind, body FROM resources ORDER BY kind, id"):
                resources.setdefault(kind, []).append(bytes(body))
            meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
            lo, hi = db.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone() \
                or (None, None)
            last = max(hi or 0, meta.get("last_seq", 0))
            first = lo if lo is not None else last + 1
            rows = [(int(s), bytes(b)) for s, b in db.execute(
                "SELECT seq, body FROM events WHERE seq > %s ORDER BY seq", (last - recent,))]
            return Loaded(resources, meta, int(first), int(last), rows)

    def commit(self, batch: Batch) -> None:
        with self._session() as db, db.transaction(), db.cursor() as cur:
            self._extend(cur)
            if batch.puts:
                cur.executemany("INSERT INTO resources (kind, id, body) VALUES (%s, %s, %s) "
                                "ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body",
                                batch.puts)
            if batch.deletes:
                cur.executemany("DELETE FROM resources WHERE kind = %s AND id = %s",
                                batch.deletes)
            if batch.events:
                cur.executemany("INSERT INTO events (seq, body) VALUES (%s, %s)", batch.events)
            if batch.requests:
                at = time.time()
                cur.executemany("INSERT INTO requests (request_id, method, response, at) "
                                "VALUES (%s, %s, %s, %s)",
                                [(rid, method, body, at) for rid, method, body in batch.requests])
            if batch.meta:
                cur.executemany("INSERT INTO meta (key, value) VALUES (%s, %s) "
                                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                                list(batch.meta.items()))

    def request(self, request_id: str) -> tuple[str, bytes] | None:
        with self._session() as db:
            row = db.execute("SELECT method, response FROM requests WHERE request_id = %s",
                             (request_id,)).fetchone()
        return (str(row[0]), bytes(row[1])) if row else None

    def request_ids(self) -> set[str]:
        with self._session() as db:
            return {str(r[0]) for r in db.execute("SELECT request_id FROM requests")}

    def events_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        with self._session() as db:
            return [(int(s), bytes(b)) for s, b in db.execute(
                "SELECT seq, body FROM events WHERE seq > %s ORDER BY seq LIMIT %s",
                (seq, limit))]

    def prune(self, keep_events_from: int, requests_before: float) -> None:
        with self._session() as db, db.transaction(), db.cursor() as cur:
            self._extend(cur)
            cur.execute("DELETE FROM events WHERE seq < %s", (keep_events_from,))
            cur.execute("DELETE FROM requests WHERE at < %s", (requests_before,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
