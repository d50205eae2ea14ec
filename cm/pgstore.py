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

PostgreSQL's own streaming replication keeps the database itself available;
this file does not replicate anything.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg

from tashi.cm.store import KINDS, Batch, Loaded, Store, StoreError

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
"""

# Two CMs starting at once both run SCHEMA; this lock keeps them apart.
SCHEMA_LOCK = 0x7461736869  # "tashi"


class LeaseLost(StoreError):
    """This process no longer holds the lease: it must not write, and steps down."""

    deposed = True


@dataclass(frozen=True)
class Holder:
    name: str  # where this CM serves (host:port), shown to clients of standbys
    epoch: int


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"the store {redact(url)} cannot be opened: "
                         f"{str(exc).strip().splitlines()[0]}") from None


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
        self._db = _connect(url)
        self._lock = threading.Lock()
        self.holder: Holder | None = None
        try:
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                self._db.execute(SCHEMA)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(f"the store {redact(url)} cannot be set up: {exc}") from None

    # -- the lease ----------------------------------------------------------------
    def try_lead(self, name: str) -> bool:
        """Take the lease if it is free or expired, or held under our own name (a
        CM restarted in place: the old process, if it still lives, is fenced out by
        the new epoch); then every commit is fenced by the epoch taken here."""
        with self._lock:
            row = self._db.execute(
                "UPDATE leader SET holder = %s, epoch = epoch + 1, "
                "expires = now() + make_interval(secs => %s) "
                "WHERE id = 1 AND (expires < now() OR holder = '' OR holder = %s) "
                "RETURNING epoch", (name, self.lease_seconds, name)).fetchone()
            if row is None:
                return False
            self.holder = Holder(name, int(row[0]))
            return True

    def leader(self) -> str:
        """Who holds an unexpired lease ('' when nobody)."""
        with self._lock:
            row = self._db.execute(
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
        """Extend the lease; LeaseLost when it is gone."""
        with self._lock, self._db.transaction(), self._db.cursor() as cur:
            self._extend(cur)

    def resign(self) -> None:
        """Give the lease up at once (an orderly stop), so a standby need not wait."""
        with self._lock:
            holder, self.holder = self.holder, None
            if holder is not None:
                self._db.execute("UPDATE leader SET expires = now() - interval '1 second' "
                                 "WHERE id = 1 AND holder = %s AND epoch = %s",
                                 (holder.name, holder.epoch))

    # -- the Store interface ------------------------------------------------------
    def load(self, recent: int) -> Loaded:
        with self._lock:
            resources: dict[str, list[bytes]] = {k: [] for k in KINDS}
            for kind, body in self._db.execute(
                    "SELECT kind, body FROM resources ORDER BY kind, id"):
                resources.setdefault(kind, []).append(bytes(body))
            meta = {str(k): int(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
            lo, hi = self._db.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone() \
                or (None, None)
            last = max(hi or 0, meta.get("last_seq", 0))
            first = lo if lo is not None else last + 1
            rows = [(int(s), bytes(b)) for s, b in self._db.execute(
                "SELECT seq, body FROM events WHERE seq > %s ORDER BY seq", (last - recent,))]
            return Loaded(resources, meta, int(first), int(last), rows)

    def commit(self, batch: Batch) -> None:
        with self._lock:
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    self._extend(cur)
                    if batch.puts:
                        cur.executemany(
                            "INSERT INTO resources (kind, id, body) VALUES (%s, %s, %s) "
                            "ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body",
                            batch.puts)
                    if batch.deletes:
                        cur.executemany("DELETE FROM resources WHERE kind = %s AND id = %s",
                                        batch.deletes)
                    if batch.events:
                        cur.executemany("INSERT INTO events (seq, body) VALUES (%s, %s)",
                                        batch.events)
                    if batch.request:
                        rid, method, body = batch.request
                        cur.execute("INSERT INTO requests (request_id, method, response, at) "
                                    "VALUES (%s, %s, %s, %s)", (rid, method, body, time.time()))
                    if batch.meta:
                        cur.executemany(
                            "INSERT INTO meta (key, value) VALUES (%s, %s) "
                            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                            list(batch.meta.items()))
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from None

    def request(self, request_id: str) -> tuple[str, bytes] | None:
        with self._lock:
            row = self._db.execute("SELECT method, response FROM requests WHERE request_id = %s",
                                   (request_id,)).fetchone()
        return (str(row[0]), bytes(row[1])) if row else None

    def request_ids(self) -> set[str]:
        with self._lock:
            return {str(r[0]) for r in self._db.execute("SELECT request_id FROM requests")}

    def events_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return [(int(s), bytes(b)) for s, b in self._db.execute(
                "SELECT seq, body FROM events WHERE seq > %s ORDER BY seq LIMIT %s",
                (seq, limit))]

    def prune(self, keep_events_from: int, requests_before: float) -> None:
        with self._lock, self._db.transaction(), self._db.cursor() as cur:
            self._extend(cur)
            cur.execute("DELETE FROM events WHERE seq < %s", (keep_events_from,))
            cur.execute("DELETE FROM requests WHERE at < %s", (requests_before,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
