"""AccountingService: translates requests, checks who may see what, delegates.

Refusals are `ServiceError`s, answered by the shared error interceptor."""

from __future__ import annotations

from collections.abc import Container

import grpc

from tashi.accounting.ledger import KIND_DRIFT, KIND_EVENT, KIND_GAP, Ledger
from tashi.accounting.listing import EntryFilter, list_entries
from tashi.accounting.timeutil import now_ns, ns_to_ts, ts_to_ns
from tashi.accounting.usage import GroupBy, UsageRow, usage
from tashi.runtime.auth import caller_name
from tashi.runtime.errors import denied, invalid, unauthenticated
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import accounting_pb2_grpc as apb_grpc

MAX_PAGE = 5000
DEFAULT_PAGE = 1000

_GROUP_BY = {
    apb.USAGE_GROUP_BY_UNSPECIFIED: GroupBy.USER,
    apb.USAGE_GROUP_BY_USER: GroupBy.USER,
    apb.USAGE_GROUP_BY_INSTANCE: GroupBy.INSTANCE,
    apb.USAGE_GROUP_BY_HOST: GroupBy.HOST,
}


def usage_record(row: UsageRow) -> apb.UsageRecord:
    return apb.UsageRecord(
        user=row.user, instance_id=row.instance_id, instance_name=row.instance_name,
        host_id=row.host_id, host_name=row.host_name, hosts=row.hosts,
        instance_count=row.instance_count,
        running=apb.UsageFigures(seconds=row.running.seconds,
                                 core_seconds=row.running.core_seconds,
                                 memory_mib_seconds=row.running.memory_mib_seconds),
        paused=apb.UsageFigures(seconds=row.paused.seconds,
                                core_seconds=row.paused.core_seconds,
                                memory_mib_seconds=row.paused.memory_mib_seconds))


def ledger_entry(entry_id: int, kind: int, body: bytes) -> apb.LedgerEntry:
    out = apb.LedgerEntry(id=entry_id, kind=kind)  # type: ignore[arg-type]
    if kind == KIND_EVENT:
        out.event.ParseFromString(body)
    elif kind == KIND_GAP:
        out.gap.ParseFromString(body)
    elif kind == KIND_DRIFT:
        out.drift.ParseFromString(body)
    return out


class AccountingServicer(apb_grpc.AccountingServiceServicer):
    def __init__(self, ledger: Ledger, admins: Container[str]) -> None:
        """`admins`: the cluster manager's (accounting.admins.CmAdmins), or a fixed set."""
        self.ledger = ledger
        self.admins = admins

    def _caller(self, context: grpc.ServicerContext) -> tuple[str, bool]:
        caller = caller_name(context)
        if not caller:
            raise unauthenticated("no user name in the request metadata (x-tashi-user)")
        return caller, caller in self.admins

    def GetUsage(self, request: apb.GetUsageRequest,
                 context: grpc.ServicerContext) -> apb.GetUsageResponse:
        caller, admin = self._caller(context)
        user: str | None = request.user or None
        if not admin:
            if user is not None and user != caller:
                raise denied(f"{caller} may see only their own usage, not {user}'s")
            user = caller
        now = now_ns()
        start = ts_to_ns(request.start_time) if request.HasField("start_time") else 0
        end = min(ts_to_ns(request.end_time), now) if request.HasField("end_time") else now
        if request.HasField("start_time") and request.HasField("end_time") \
                and ts_to_ns(request.end_time) < start:
            raise invalid("end_time is before start_time")
        group_by = _GROUP_BY.get(request.group_by)
        if group_by is None:
            raise invalid(f"unknown group_by {request.group_by}")
        conn = self.ledger.reader()
        conn.execute("BEGIN")
        try:
            seq_row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            rows = usage(conn, start_ns=start, end_ns=max(start, end), group_by=group_by,
                         user=user) if end > start else []
            gap_bodies = [body for (body,) in conn.execute(
                f"SELECT body FROM ledger WHERE seq IS NULL AND kind = {KIND_GAP} ORDER BY id")]
        finally:
            conn.execute("COMMIT")
        gaps = []
        for body in gap_bodies:
            gap = apb.LedgerGap.FromString(body)
            if ts_to_ns(gap.start_time) < end and ts_to_ns(gap.end_time) >= start:
                gaps.append(gap)
        return apb.GetUsageResponse(records=[usage_record(r) for r in rows],
                                    start_time=ns_to_ts(start), end_time=ns_to_ts(max(start, end)),
                                    seq=seq_row[0] if seq_row else 0, gaps=gaps)

    def ListEvents(self, request: apb.ListEventsRequest,
                   context: grpc.ServicerContext) -> apb.ListEventsResponse:
        caller, admin = self._caller(context)
        if request.page_size < 0:
            raise invalid("page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        try:
            after_id = int(request.page_token) if request.page_token else 0
        except ValueError:
            raise invalid(f"page_token {request.page_token!r} was not issued by this service"
                          ) from None
        if not admin and request.owner and request.owner != caller:
            raise denied(f"{caller} may see only their own events, not {request.owner}'s")
        flt = EntryFilter(
            kinds=list(request.kinds), types=list(request.types),
            instance_id=request.instance_id, host_id=request.host_id, owner=request.owner,
            start_ns=ts_to_ns(request.start_time) if request.HasField("start_time") else 0,
            end_ns=ts_to_ns(request.end_time) if request.HasField("end_time") else 0,
            after_seq=request.after_seq, visible_to=None if admin else caller)
        rows, next_id = list_entries(self.ledger.reader(), flt, after_id, size)
        return apb.ListEventsResponse(
            entries=[ledger_entry(r.id, r.kind, r.body) for r in rows],
            next_page_token=str(next_id) if next_id else "")

