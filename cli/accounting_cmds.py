"""getUsage and getEvents: the accounting service's ledger from the command line."""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from tashi.cli.context import Context, UsageError, credentials
from tashi.runtime.accounting_client import DEFAULT_ACCOUNTING, GROUP_BY, AccountingClient
from tashi.runtime.names import host_state_name, instance_state_name
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import resources_pb2 as pb

FIGURE_COLUMNS = ["running_seconds", "core_seconds", "memory_mib_seconds", "paused_seconds",
                  "paused_core_seconds", "paused_memory_mib_seconds"]
USAGE_COLUMNS = {
    "user": ["user", "instances", *FIGURE_COLUMNS],
    "instance": ["instance_id", "instance_name", "user", "hosts", *FIGURE_COLUMNS],
    "host": ["host_id", "host_name", "instances", *FIGURE_COLUMNS],
}
EVENT_COLUMNS = ["id", "kind", "seq", "time", "type", "subject", "state", "host", "owner",
                 "message"]
KINDS = {"event": apb.LEDGER_ENTRY_KIND_EVENT, "gap": apb.LEDGER_ENTRY_KIND_GAP,
         "drift": apb.LEDGER_ENTRY_KIND_DRIFT}
KIND_NAMES = {v: k for k, v in KINDS.items()}
AGO = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> Timestamp:
    """ISO 8601 (UTC when no zone is given), `now`, or an age such as 90m, 12h, 7d."""
    now = now or datetime.now(UTC)
    m = AGO.match(text.strip())
    if text.strip() == "now":
        when = now
    elif m:
        when = now - timedelta(**{UNITS[m.group(2)]: int(m.group(1))})
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            raise UsageError(f"time {text!r} is not ISO 8601 (2024-05-01, 2024-05-01T12:00Z), "
                             "'now' or an age such as 12h or 7d") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def _time_text(ts: Timestamp) -> str:
    return ts.ToJsonString() if ts.seconds or ts.nanos else ""


def _client(ctx: Context) -> AccountingClient:
    return AccountingClient(ctx.args.accounting, user=ctx.args.user, timeout=ctx.args.timeout,
                            tls=credentials(ctx.args))


def usage_row(rec: apb.UsageRecord) -> dict[str, Any]:
    return {
        "user": rec.user, "instance_id": rec.instance_id, "instance_name": rec.instance_name,
        "host_id": rec.host_id, "host_name": rec.host_name, "hosts": list(rec.hosts),
        "instances": rec.instance_count,
        "running_seconds": round(rec.running.seconds, 3),
        "core_seconds": round(rec.running.core_seconds, 3),
        "memory_mib_seconds": round(rec.running.memory_mib_seconds, 3),
        "paused_seconds": round(rec.paused.seconds, 3),
        "paused_core_seconds": round(rec.paused.core_seconds, 3),
        "paused_memory_mib_seconds": round(rec.paused.memory_mib_seconds, 3),
    }


def get_usage(ctx: Context) -> int:
    a = ctx.args
    start = parse_time(a.start) if a.start else None
    end = parse_time(a.end) if a.end else None
    with _client(ctx) as client:
        resp = client.get_usage(user=a.user_name or "", start=start, end=end,
                                group_by=a.group_by)
    for gap in resp.gaps:
        ctx.err(f"warning: the ledger missed events between {_time_text(gap.start_time)} and "
                f"{_time_text(gap.end_time)} ({gap.reason}); figures there may be incomplete")
    ctx.output([usage_row(r) for r in resp.records], USAGE_COLUMNS[a.group_by])
    return 0


def entry_row(entry: apb.LedgerEntry) -> dict[str, Any]:
    row: dict[str, Any] = {"id": entry.id, "kind": KIND_NAMES.get(entry.kind, str(entry.kind)),
                           "seq": "", "time": "", "type": "", "subject": "", "state": "",
                           "host": "", "owner": "", "message": "", "actor": ""}
    which = entry.WhichOneof("entry")
    if which == "event":
        ev = entry.event
        row.update(seq=ev.seq, time=_time_text(ev.time), actor=ev.actor, message=ev.message,
                   type=pb.EventType.Name(ev.type).removeprefix("EVENT_TYPE_").lower())
        subject = ev.WhichOneof("subject")
        if subject == "instance":
            inst = ev.instance
            row.update(subject=f"instance {inst.id} {inst.name}", owner=inst.owner,
                       state=instance_state_name(inst.status.state), host=inst.status.host_name)
        elif subject == "host":
            host = ev.host
            row.update(subject=f"host {host.id} {host.name}", host=host.name,
                       state=("up " if host.up else "down ") + host_state_name(host.state))
        elif subject is not None:
            obj = getattr(ev, subject)
            row.update(subject=f"{subject} {obj.id} {obj.name}")
    elif which == "gap":
        gap = entry.gap
        row.update(seq=gap.resume_seq, time=_time_text(gap.end_time),
                   message=f"no events after seq {gap.after_seq} until {gap.resume_seq} "
                           f"(since {_time_text(gap.start_time)}): {gap.reason}")
    elif which == "drift":
        d = entry.drift
        row.update(seq=d.seq, time=_time_text(d.time), subject=f"instance {d.instance_id}",
                   owner=d.owner, message=d.reason,
                   state=(instance_state_name(d.ledger.status.state)
                          if d.HasField("ledger") else "-")
                   + " -> " + (instance_state_name(d.cluster.status.state)
                               if d.HasField("cluster") else "-"))
    return row


def _event_type(text: str) -> int:
    name = "EVENT_TYPE_" + text.strip().upper().replace("-", "_")
    try:
        return pb.EventType.Value(name)
    except ValueError:
        names = [n.removeprefix("EVENT_TYPE_").lower() for n in pb.EventType.keys()[1:]]
        raise UsageError(f"no event type {text!r}; types are: {', '.join(names)}") from None


def get_events(ctx: Context) -> int:
    a = ctx.args
    req = apb.ListEventsRequest(page_size=min(a.limit or 5000, 5000),
                                instance_id=a.instance or 0, host_id=a.host or 0,
                                owner=a.owner or "", after_seq=a.after_seq or 0)
    for kind in (a.kind or "").split(","):
        if kind:
            if kind not in KINDS:
                raise UsageError(f"--kind is one or more of {', '.join(KINDS)}")
            req.kinds.append(KINDS[kind])  # type: ignore[arg-type]
    for etype in (a.type or "").split(","):
        if etype:
            req.types.append(_event_type(etype))  # type: ignore[arg-type]
    if a.start:
        req.start_time.CopyFrom(parse_time(a.start))
    if a.end:
        req.end_time.CopyFrom(parse_time(a.end))
    with _client(ctx) as client:
        rows = [entry_row(e) for e in client.list_events(req, limit=a.limit)]
    ctx.output(rows, EVENT_COLUMNS)
    return 0


def _accounting_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accounting", metavar="HOST:PORT",
                   default=os.environ.get("TASHI_ACCOUNTING", DEFAULT_ACCOUNTING),
                   help="accounting service (env TASHI_ACCOUNTING)")
    p.add_argument("--from", dest="start", metavar="TIME",
                   help="from this time: ISO 8601 (UTC unless it names a zone), now, "
                        "or an age such as 12h or 7d")
    p.add_argument("--to", dest="end", metavar="TIME", help="until this time (default now)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("getUsage", help="usage from the accounting ledger (core-, MiB-seconds)")
    _accounting_flag(p)
    p.add_argument("--user", dest="user_name", metavar="NAME",
                   help="only this user (admins only for others; default: all you may see)")
    p.add_argument("--group-by", choices=list(GROUP_BY), default="user")
    p.set_defaults(func=get_usage)

    p = sub.add_parser("getEvents", help="the accounting ledger: events, gaps and drift")
    _accounting_flag(p)
    p.add_argument("--instance", type=int, metavar="ID", help="only this instance")
    p.add_argument("--host", type=int, metavar="ID", help="only this host")
    p.add_argument("--owner", metavar="NAME", help="only this owner's instances")
    p.add_argument("--type", metavar="T,..", help="event types, e.g. instance_updated,host_updated")
    p.add_argument("--kind", metavar="K,..", help="event, gap, drift")
    p.add_argument("--after-seq", type=int, metavar="N", help="only events after this sequence")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (0: all)")
    p.set_defaults(func=get_events)

