"""Typed client of the accounting service (for the CLI and scripts).

Raises `TashiError` (code + message) like the other clients in `tashi.runtime`.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.timestamp_pb2 import Timestamp

from tashi.runtime.rpc import RpcClient
from tashi.runtime.tls import Tls
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import accounting_pb2_grpc as apb_grpc

DEFAULT_ACCOUNTING = "127.0.0.1:9884"
GROUP_BY = {"user": apb.USAGE_GROUP_BY_USER, "instance": apb.USAGE_GROUP_BY_INSTANCE,
            "host": apb.USAGE_GROUP_BY_HOST}


class AccountingClient(RpcClient):
    service = "accounting service"

    def __init__(self, address: str = DEFAULT_ACCOUNTING, user: str = "root",
                 timeout: float = 30.0, tls: Tls | None = None) -> None:
        super().__init__(address, user, timeout, tls)
        self.stub = apb_grpc.AccountingServiceStub(self._channel)

    def get_usage(self, user: str = "", start: Timestamp | None = None,
                  end: Timestamp | None = None, group_by: str = "user") -> apb.GetUsageResponse:
        req = apb.GetUsageRequest(user=user, group_by=GROUP_BY[group_by])
        if start is not None:
            req.start_time.CopyFrom(start)
        if end is not None:
            req.end_time.CopyFrom(end)
        return self.call(self.stub.GetUsage, req)

    def list_events(self, request: apb.ListEventsRequest,
                    limit: int = 0) -> Iterator[apb.LedgerEntry]:
        """Entries matching `request`, page after page; at most `limit` (0: all)."""
        req = apb.ListEventsRequest()
        req.CopyFrom(request)
        count = 0
        while True:
            resp = self.call(self.stub.ListEvents, req)
            for entry in resp.entries:
                yield entry
                count += 1
                if limit and count >= limit:
                    return
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token
