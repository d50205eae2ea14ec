"""Listing the ledger: filters and keyset pagination over the entry id."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from tashi.accounting.ledger import KIND_EVENT, KIND_GAP


@dataclass
class EntryFilter:
    kinds: list[int] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    instance_id: int = 0
    host_id: int = 0
    owner: str = ""
    start_ns: int = 0
    end_ns: int = 0
    after_seq: int = 0
    # For callers who are not admins: only their own instances, and the gaps.
    visible_to: str | None = None


@dataclass
class EntryRow:
    id: int
    kind: int
    body: bytes


def list_entries(conn: sqlite3.Connection, flt: EntryFilter, after_id: int,
                 limit: int) -> tuple[list[EntryRow], int]:
    """Up to `limit` entries after `after_id`; the id to continue after, or 0 at the end."""
    where = ["id > ?"]
    params: list[object] = [after_id]
    if flt.kinds:
        where.append(f"kind IN ({','.join('?' * len(flt.kinds))})")
        params += flt.kinds
        if KIND_EVENT not in flt.kinds:
            where.append("seq IS NULL")  # only the ledger's own records: their index
    if flt.types:
        where.append(f"kind = {KIND_EVENT} AND type IN ({','.join('?' * len(flt.types))})")
        params += flt.types
    if flt.instance_id:
        where.append("instance_id = ?")
        params.append(flt.instance_id)
    if flt.host_id:
        where.append("host_id = ?")
        params.append(flt.host_id)
    if flt.owner:
        where.append("owner = ?")
        params.append(flt.owner)
    if flt.start_ns:
        where.append("time_ns >= ?")
        params.append(flt.start_ns)
    if flt.end_ns:
        where.append("time_ns < ?")
        params.append(flt.end_ns)
    if flt.after_seq:
        where.append(f"(kind != {KIND_EVENT} OR seq > ?)")
        params.append(flt.after_seq)
    if flt.visible_to is not None:
        where.append(f"(owner = ? OR kind = {KIND_GAP})")
        params.append(flt.visible_to)
    sql = (f"SELECT id, kind, body FROM ledger WHERE {' AND '.join(where)}"
           " ORDER BY id LIMIT ?")
    params.append(limit + 1)
    rows = [EntryRow(*r) for r in conn.execute(sql, params)]
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, 0
