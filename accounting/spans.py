"""Billed spans: how many instances a user (or host) was billed for in a range.

A span runs from an instance's first billed moment to its last, per user and
per host; a break is an unbilled stretch inside a span (suspended, or away
on another host).  The instances billed in [S, E) are the spans overlapping
it less the breaks that contain it, which two small aggregate queries count.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from tashi.accounting.schema import OPEN_END

SpanKey = tuple[str, str, int]  # kind ("user" / "host"), key, instance id


@dataclass
class SpanChanges:
    """What one transaction changes, over the committed state."""

    spans: dict[SpanKey, tuple[int, int]] = field(default_factory=dict)
    breaks: list[tuple[str, str, int, int, int]] = field(default_factory=list)


class Spans:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # Spans of instances still alive: the only ones that change.
        self.live: dict[SpanKey, tuple[int, int]] = {
            (kind, key, iid): (first, last)
            for kind, key, iid, first, last in conn.execute(
                "SELECT s.kind, s.key, s.instance_id, s.first_ns, s.last_ns FROM spans s"
                " JOIN instances i ON i.instance_id = s.instance_id WHERE i.deleted = 0")}
        # Instances brought back after the ledger had them deleted (a reconcile or
        # relist): only their spans may be in the file but not in `live`.
        self.revived: set[int] = set()

    def _get(self, ch: SpanChanges, key: SpanKey) -> tuple[int, int] | None:
        span = ch.spans.get(key) or self.live.get(key)
        if span is None and key[2] in self.revived:
            row = self._conn.execute(
                "SELECT first_ns, last_ns FROM spans WHERE kind = ? AND key = ?"
                " AND instance_id = ?", key).fetchone()
            span = None if row is None else (row[0], row[1])
        return span

    def opened(self, ch: SpanChanges, key: SpanKey, t: int) -> None:
        span = self._get(ch, key)
        if span is None:
            ch.spans[key] = (t, OPEN_END)
            return
        first, last = span
        if last != OPEN_END and last < t:
            ch.breaks.append((*key, last, t))
        ch.spans[key] = (min(first, t), OPEN_END)

    def closed(self, ch: SpanChanges, key: SpanKey, t: int) -> None:
        span = self._get(ch, key)
        first = t if span is None else min(span[0], t)
        ch.spans[key] = (first, t)

    def reopened(self, ch: SpanChanges, key: SpanKey) -> None:
        span = self._get(ch, key)
        if span is not None:
            ch.spans[key] = (span[0], OPEN_END)

    def write(self, conn: sqlite3.Connection, ch: SpanChanges) -> None:
        conn.executemany("INSERT OR REPLACE INTO spans (kind, key, instance_id, first_ns,"
                         " last_ns) VALUES (?, ?, ?, ?, ?)",
                         [(*k, first, last) for k, (first, last) in ch.spans.items()])
        conn.executemany("INSERT INTO breaks (kind, key, instance_id, start_ns, end_ns)"
                         " VALUES (?, ?, ?, ?, ?)", ch.breaks)

    def adopt(self, ch: SpanChanges, gone: set[int]) -> None:
        self.live.update(ch.spans)
        if gone:
            for key in [k for k in self.live if k[2] in gone]:
                del self.live[key]


def instance_counts(conn: sqlite3.Connection, kind: str, start: int, end: int,
                    key: str | None = None) -> dict[str, int]:
    """Instances billed at some moment of [start, end), by key."""
    where, params = "kind = ?", [kind]
    if key is not None:
        where += " AND key = ?"
        params.append(key)
    counts: dict[str, int] = dict(conn.execute(
        f"SELECT key, COUNT(*) FROM spans WHERE {where} AND first_ns < ? AND last_ns > ?"
        " GROUP BY key", (*params, end, start)))
    for k, n in conn.execute(
            f"SELECT key, COUNT(*) FROM breaks WHERE {where} AND start_ns <= ? AND end_ns >= ?"
            " GROUP BY key", (*params, start, end)):
        counts[k] = counts.get(k, 0) - n
    return counts
