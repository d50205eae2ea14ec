"""Usage figures from the billed intervals, clipped to a time range.

One SQL aggregate over the intervals overlapping the range: each interval
contributes its overlap with [start, end) times its cores and memory, to
the Running or Paused figures by its phase.  Sums are of integer
nanoseconds, converted to seconds once at the end, so whole figures stay
exact.  Intervals still open end at
`end` (which the caller caps at now).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from enum import Enum

from tashi.accounting.curves import HOST, USER, curve_ids, integral_at
from tashi.accounting.phases import Phase
from tashi.accounting.spans import instance_counts
from tashi.accounting.timeutil import NS


class GroupBy(Enum):
    USER = "user"
    INSTANCE = "instance"
    HOST = "host"


@dataclass
class Figures:
    seconds: float = 0.0
    core_seconds: float = 0.0
    memory_mib_seconds: float = 0.0


@dataclass
class UsageRow:
    user: str = ""
    instance_id: int = 0
    instance_name: str = ""
    host_id: int = 0
    host_name: str = ""
    hosts: list[str] = field(default_factory=list)
    instance_count: int = 0
    running: Figures = field(default_factory=Figures)
    paused: Figures = field(default_factory=Figures)


# Group key columns, and the descriptive columns that go with them.
_KEYS: dict[GroupBy, tuple[str, str]] = {
    GroupBy.USER: ("owner", "owner, 0, '', 0, ''"),
    GroupBy.INSTANCE: ("instance_id", "MAX(owner), instance_id, MAX(instance_name), 0, ''"),
    GroupBy.HOST: ("host_id", "'', 0, '', host_id, MAX(host_name)"),
}


def _figures(phase: Phase) -> str:
    p = int(phase)
    return (f"total(CASE WHEN phase = {p} THEN d END), "
            f"total(CASE WHEN phase = {p} THEN d * cores END), "
            f"total(CASE WHEN phase = {p} THEN d * memory_mib END)")


def usage(conn: sqlite3.Connection, *, start_ns: int, end_ns: int, group_by: GroupBy,
          user: str | None = None) -> list[UsageRow]:
    """Usage in [start_ns, end_ns), of one user or everyone, ordered by the group key."""
    if group_by is GroupBy.USER:
        return usage_from_curves(conn, start_ns=start_ns, end_ns=end_ns, kind=USER, key=user)
    if group_by is GroupBy.HOST and user is None:
        return usage_from_curves(conn, start_ns=start_ns, end_ns=end_ns, kind=HOST)
    return usage_scan(conn, start_ns=start_ns, end_ns=end_ns, group_by=group_by, user=user)


def usage_from_curves(conn: sqlite3.Connection, *, start_ns: int, end_ns: int, kind: str,
                      key: str | None = None) -> list[UsageRow]:
    """Per user or per host; `hosts` is left empty (it needs the intervals)."""
    rows: dict[str, UsageRow] = {}
    for cid, ckey, phase in curve_ids(conn, kind, key):
        e = integral_at(conn, cid, end_ns)
        s = integral_at(conn, cid, start_ns)
        figures = Figures((e[0] - s[0]) / NS, (e[1] - s[1]) / NS, (e[2] - s[2]) / NS)
        row = rows.get(ckey)
        if row is None:
            row = rows[ckey] = UsageRow()
        if phase == Phase.RUNNING:
            row.running = figures
        elif phase == Phase.PAUSED:
            row.paused = figures
    counts = instance_counts(conn, kind, start_ns, end_ns, key)
    names = dict(conn.execute("SELECT host_id, name FROM hosts")) if kind == HOST else {}
    out: list[UsageRow] = []
    for ckey, row in rows.items():
        row.instance_count = counts.get(ckey, 0)
        if not row.instance_count and not row.running.seconds and not row.paused.seconds:
            continue
        if kind == USER:
            row.user = ckey
        else:
            row.host_id = int(ckey)
            row.host_name = names.get(row.host_id) or _interval_host_name(conn, row.host_id)
        out.append(row)
    out.sort(key=lambda r: (r.user, r.host_id))
    return out


def _interval_host_name(conn: sqlite3.Connection, host_id: int) -> str:
    row = conn.execute("SELECT host_name FROM intervals WHERE host_id = ? AND host_name != ''"
                       " ORDER BY id DESC LIMIT 1", (host_id,)).fetchone()
    return str(row[0]) if row else ""


def usage_scan(conn: sqlite3.Connection, *, start_ns: int, end_ns: int, group_by: GroupBy,
               user: str | None = None) -> list[UsageRow]:
    """Usage from the intervals themselves (exact, with the hosts each group ran on)."""
    key, described = _KEYS[group_by]
    where = "end_ns > :start AND start_ns < :end"
    if user is not None:
        where += " AND owner = :user"
    sql = (
        f"SELECT {described}, COUNT(DISTINCT instance_id), group_concat(DISTINCT host_name),"
        f" {_figures(Phase.RUNNING)}, {_figures(Phase.PAUSED)}"
        " FROM (SELECT owner, instance_id, instance_name, host_id, host_name, phase, cores,"
        "  memory_mib, (MIN(end_ns, :end) - MAX(start_ns, :start)) AS d"
        f"  FROM intervals WHERE {where})"
        f" GROUP BY {key} ORDER BY {key}"
    )
    rows: list[UsageRow] = []
    params = {"start": start_ns, "end": end_ns, "user": user}
    for (owner, iid, iname, hid, hname, count, hosts, rs, rc, rm, ps, pc, pm) in conn.execute(
            sql, params):
        names = sorted(h for h in (hosts or "").split(",") if h)
        rows.append(UsageRow(user=owner or user or "", instance_id=iid, instance_name=iname,
                             host_id=hid, host_name=hname, hosts=names, instance_count=count,
                             running=Figures(rs / NS, rc / NS, rm / NS),
                             paused=Figures(ps / NS, pc / NS, pm / NS)))
    return rows
