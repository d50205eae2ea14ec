"""Usage curves: what a user (or a host) is billed for, as a step function of time.

Each curve is one (kind, key, phase), e.g. ("user", "alice", RUNNING).  Its
points hold the level after each change (instances, cores, MiB billed at
once) and the integral of each level from the beginning up to the point.
The usage over [S, E) is F(E) - F(S) with F(T) = cum + level * (T - t) at
the last point t <= T: two index lookups per curve, whatever the size of
the ledger.

Changes almost always arrive in time order and append a point.  One in the
past (an orphaned instance found running all along, or a clock stepping
back) inserts a point and shifts the later ones, inside the same
transaction.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass

CurveKey = tuple[str, str, int]  # kind ("user" / "host"), key, phase

USER = "user"
HOST = "host"


@dataclass(frozen=True, slots=True)
class Point:
    t: int
    n: int
    cores: int
    memory_mib: int
    cum_n: float
    cum_cores: float
    cum_memory_mib: float

    def after(self, t: int, dn: int, dc: int, dm: int) -> Point:
        """The point at `t` >= self.t, with the levels changed by the deltas."""
        dt = t - self.t
        return Point(t, self.n + dn, self.cores + dc, self.memory_mib + dm,
                     self.cum_n + self.n * dt, self.cum_cores + self.cores * dt,
                     self.cum_memory_mib + self.memory_mib * dt)

    def integral(self, t: int) -> tuple[float, float, float]:
        dt = t - self.t
        return (self.cum_n + self.n * dt, self.cum_cores + self.cores * dt,
                self.cum_memory_mib + self.memory_mib * dt)


ZERO = (0.0, 0.0, 0.0)
_COLUMNS = "t, n, cores, memory_mib, cum_n, cum_cores, cum_memory_mib"


def _point(row: tuple[int, int, int, int, float, float, float] | None) -> Point | None:
    return None if row is None else Point(*row)


class Curves:
    """The writer's side: curve ids and the last point of every curve, cached."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.ids: dict[CurveKey, int] = {
            (kind, key, phase): cid
            for cid, kind, key, phase in conn.execute("SELECT id, kind, key, phase FROM curves")}
        self.last: dict[int, Point] = {}
        for cid in self.ids.values():
            p = _point(conn.execute(f"SELECT {_COLUMNS} FROM curve_points WHERE curve_id = ?"
                                    " ORDER BY t DESC LIMIT 1", (cid,)).fetchone())
            if p is not None:
                self.last[cid] = p
        self.next_id = max(self.ids.values(), default=0) + 1

    def write(self, conn: sqlite3.Connection,
              steps: list[tuple[CurveKey, int, int, int, int]]) -> tuple[
                  dict[CurveKey, int], dict[int, Point], int]:
        """Write the steps (curve, t, d_instances, d_cores, d_mib) inside the caller's
        transaction; returns the new ids, last points and next id to adopt after commit."""
        by_curve: dict[CurveKey, list[tuple[int, int, int, int]]] = defaultdict(list)
        for key, t, dn, dc, dm in steps:
            by_curve[key].append((t, dn, dc, dm))
        new_ids: dict[CurveKey, int] = {}
        new_last: dict[int, Point] = {}
        next_id = self.next_id
        rows: dict[tuple[int, int], Point] = {}
        for key, changes in by_curve.items():
            cid = self.ids.get(key)
            if cid is None:
                cid = next_id
                next_id += 1
                new_ids[key] = cid
            changes.sort(key=lambda c: c[0])
            last = self.last.get(cid)
            for t, dn, dc, dm in changes:
                if last is None or t >= last.t:
                    base = last or Point(t, 0, 0, 0, 0.0, 0.0, 0.0)
                    last = base.after(t, dn, dc, dm)
                    rows[(cid, t)] = last
                else:  # rare: rewrite this curve's past, its pending points first
                    mine = {k: p for k, p in rows.items() if k[0] == cid}
                    self._flush(conn, mine)
                    for k in mine:
                        del rows[k]
                    last = self._insert_past(conn, cid, t, dn, dc, dm)
            assert last is not None
            new_last[cid] = last
        conn.executemany("INSERT INTO curves (id, kind, key, phase) VALUES (?, ?, ?, ?)",
                         [(cid, *key) for key, cid in new_ids.items()])
        self._flush(conn, rows)
        return new_ids, new_last, next_id

    def adopt(self, new_ids: dict[CurveKey, int], new_last: dict[int, Point],
              next_id: int) -> None:
        self.ids.update(new_ids)
        self.last.update(new_last)
        self.next_id = next_id

    @staticmethod
    def _flush(conn: sqlite3.Connection, rows: dict[tuple[int, int], Point]) -> None:
        conn.executemany(
            f"INSERT OR REPLACE INTO curve_points (curve_id, {_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(cid, p.t, p.n, p.cores, p.memory_mib, p.cum_n, p.cum_cores, p.cum_memory_mib)
             for (cid, _t), p in rows.items()])

    @staticmethod
    def _insert_past(conn: sqlite3.Connection, cid: int, t: int, dn: int, dc: int,
                     dm: int) -> Point:
        prev = _point(conn.execute(f"SELECT {_COLUMNS} FROM curve_points WHERE curve_id = ?"
                                   " AND t <= ? ORDER BY t DESC LIMIT 1", (cid, t)).fetchone())
        base = prev or Point(t, 0, 0, 0, 0.0, 0.0, 0.0)
        p = base.after(t, dn, dc, dm)
        conn.execute(f"INSERT OR REPLACE INTO curve_points (curve_id, {_COLUMNS})"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (cid, p.t, p.n, p.cores, p.memory_mib, p.cum_n, p.cum_cores,
                      p.cum_memory_mib))
        conn.execute(
            "UPDATE curve_points SET n = n + :dn, cores = cores + :dc,"
            " memory_mib = memory_mib + :dm, cum_n = cum_n + :dn * (t - :t),"
            " cum_cores = cum_cores + :dc * (t - :t),"
            " cum_memory_mib = cum_memory_mib + :dm * (t - :t)"
            " WHERE curve_id = :cid AND t > :t",
            {"dn": dn, "dc": dc, "dm": dm, "t": t, "cid": cid})
        last = _point(conn.execute(f"SELECT {_COLUMNS} FROM curve_points WHERE curve_id = ?"
                                   " ORDER BY t DESC LIMIT 1", (cid,)).fetchone())
        assert last is not None
        return last


def integral_at(conn: sqlite3.Connection, cid: int, t: int) -> tuple[float, float, float]:
    """F(t) of one curve: (instance-ns, core-ns, MiB-ns) billed before `t`."""
    p = _point(conn.execute(f"SELECT {_COLUMNS} FROM curve_points WHERE curve_id = ?"
                            " AND t <= ? ORDER BY t DESC LIMIT 1", (cid, t)).fetchone())
    return ZERO if p is None else p.integral(t)


def curve_ids(conn: sqlite3.Connection, kind: str,
              key: str | None = None) -> list[tuple[int, str, int]]:
    """(id, key, phase) of the curves of one kind (and key)."""
    if key is None:
        return list(conn.execute("SELECT id, key, phase FROM curves WHERE kind = ?"
                                 " ORDER BY key, phase", (kind,)))
    return list(conn.execute("SELECT id, key, phase FROM curves WHERE kind = ? AND key = ?"
                             " ORDER BY phase", (kind, key)))
