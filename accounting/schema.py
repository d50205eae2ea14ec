"""The ledger's SQLite schema.

`ledger` keeps every event as received plus the gap and drift records;
`intervals` holds the billed phases derived from it (written in the same
transaction); `instances` is each instance's last known view, so a restart
resumes exactly where the last commit left off; `meta` holds the last
committed event sequence.
"""

from __future__ import annotations

import sqlite3

# Open intervals end here so a range query is one comparison per bound.
OPEN_END = 2**62

SCHEMA_VERSION = 1

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    seq INTEGER,
    time_ns INTEGER NOT NULL,
    type INTEGER NOT NULL DEFAULT 0,
    instance_id INTEGER,
    host_id INTEGER,
    owner TEXT,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_seq ON ledger (seq);
CREATE INDEX IF NOT EXISTS ledger_instance ON ledger (instance_id, id);
CREATE INDEX IF NOT EXISTS ledger_owner ON ledger (owner, id);
CREATE INDEX IF NOT EXISTS ledger_host ON ledger (host_id, id);
CREATE INDEX IF NOT EXISTS ledger_time ON ledger (time_ns);
-- The ledger's own records (gaps, drift) have no sequence: few, found at once.
CREATE INDEX IF NOT EXISTS ledger_notes ON ledger (kind, id) WHERE seq IS NULL;
CREATE TABLE IF NOT EXISTS intervals (
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL,
    owner TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    host_id INTEGER NOT NULL,
    host_name TEXT NOT NULL,
    phase INTEGER NOT NULL,
    cores INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL DEFAULT {OPEN_END}
);
CREATE INDEX IF NOT EXISTS intervals_end ON intervals (end_ns);
CREATE INDEX IF NOT EXISTS intervals_owner ON intervals (owner, end_ns);
CREATE TABLE IF NOT EXISTS instances (
    instance_id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    state INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    host_id INTEGER NOT NULL,
    host_name TEXT NOT NULL,
    cores INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    interval_id INTEGER,
    interval_start_ns INTEGER NOT NULL DEFAULT 0,
    orphan_interval_id INTEGER,
    last_seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instances_live ON instances (deleted);
CREATE TABLE IF NOT EXISTS hosts (
    host_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
-- Usage curves: per user and per host, for each billed phase, the level
-- (instances, cores, MiB billed at once) after each change and the
-- integral of each level up to that change (in nanosecond units), so the
-- usage over any range is two lookups per curve.
CREATE TABLE IF NOT EXISTS curves (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    phase INTEGER NOT NULL,
    UNIQUE (kind, key, phase)
);
CREATE TABLE IF NOT EXISTS curve_points (
    curve_id INTEGER NOT NULL,
    t INTEGER NOT NULL,
    n INTEGER NOT NULL,
    cores INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    cum_n REAL NOT NULL,
    cum_cores REAL NOT NULL,
    cum_memory_mib REAL NOT NULL,
    PRIMARY KEY (curve_id, t)
) WITHOUT ROWID;
-- Billed spans (first to last billed moment) of each instance per user and
-- per host, and the unbilled breaks inside them: together they count the
-- instances billed in a range without reading every interval.
CREATE TABLE IF NOT EXISTS spans (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    instance_id INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    PRIMARY KEY (kind, key, instance_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_range ON spans (kind, key, first_ns, last_ns);
CREATE TABLE IF NOT EXISTS breaks (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    instance_id INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS breaks_range ON breaks (kind, start_ns);
"""


class SchemaError(Exception):
    pass


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode; autocommit, transactions are explicit BEGIN/COMMIT."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    if readonly:
        # Readers share the file's pages through the OS instead of each
        # connection (one per server thread) filling a cache of its own.
        conn.execute("PRAGMA mmap_size = 4294967296")
        return conn
    conn.execute("PRAGMA journal_mode = WAL")
    # In WAL mode a process crash never loses a committed transaction; a power
    # cut may lose the newest ones, and since the event sequence is in the same
    # transaction the ledger then simply re-reads them.
    conn.execute("PRAGMA synchronous = NORMAL")
    # Index pages of a large ledger stay in memory between batches.
    conn.execute("PRAGMA cache_size = -65536")
    # Checkpoint (copy the WAL back, with an fsync) every ~40 MiB of changes
    # rather than every 4 MiB: a batch of 1,000 events writes a few.
    conn.execute("PRAGMA wal_autocheckpoint = 10000")
    return conn


def create(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
    elif row[0] != SCHEMA_VERSION:
        raise SchemaError(f"ledger schema {row[0]} is not the supported {SCHEMA_VERSION}")
