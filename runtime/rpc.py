"""What every typed client shares: the channel, the per-call timeout and user,
and the one translation of `grpc.RpcError` into `TashiError`.

The clients (`runtime.client.ClusterClient`, `runtime.nm_client.NodeManagerClient`,
`runtime.accounting_client.AccountingClient`) build on `RpcClient`, so callers get
protobuf messages back and `TashiError` (with `.code`) on failure, never a raw
`grpc.RpcError`.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

import grpc

from tashi.runtime.auth import user_metadata
from tashi.runtime.errors import RETRY_AFTER_KEY, ServiceError
from tashi.runtime.server import CLIENT_KEEPALIVE_OPTIONS, MAX_MESSAGE_BYTES
from tashi.runtime.tls import Tls

R = TypeVar("R")

# A busy server's "try again after" is taken up to this (a hostile or broken one
# cannot park its callers); the wait doubles on each refusal of one call, with
# jitter, so refused callers do not come back together, but by doubling only up
# to DOUBLED_UP_TO (or the server's own word, if longer).  A cluster manager
# refuses a call while its call slots are full, which lasts up to about a second
# at 1,000 hosts and 200 changes/s (bench_fleet): doubling up to 2 s kept a
# refused create waiting seconds after the slots were free.
MAX_RETRY_AFTER_MS = 2000
DOUBLED_UP_TO = 0.25


class TashiError(ServiceError):
    """A failed call: the gRPC status code the service answered and its message
    (the client's side of the one error type)."""


def translate(exc: grpc.RpcError) -> TashiError:
    """The one place a gRPC failure becomes a TashiError (with `retry_after` when
    the server refused the call before doing anything, being busy)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    retry_after = 0.0
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and hasattr(exc, "trailing_metadata"):
        for key, value in exc.trailing_metadata() or ():
            if key == RETRY_AFTER_KEY and str(value).isdigit():
                retry_after = min(int(value), MAX_RETRY_AFTER_MS) / 1000
    return TashiError(code, details or "", retry_after)


def new_request_id() -> str:
    return uuid.uuid4().hex


def channel(address: str, tls: Tls | None = None) -> grpc.Channel:
    """A channel to `address`: mutual TLS with `tls` (the server's certificate must
    name the host of `address`), plaintext without."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_http_proxy", 0),
        *CLIENT_KEEPALIVE_OPTIONS,
    ]
    if tls is not None:
        return grpc.secure_channel(address, tls.channel_credentials(), options=options)
    return grpc.insecure_channel(address, options=options)


LEADER_RE = re.compile(r"the leader is (\S+)$")


class RpcClient:
    """A channel to one service address, calls made as `user` with a default timeout.

    `address` may list several ("a:9882,b:9882": cluster managers sharing a
    PostgreSQL store, one leading).  A call answered UNAVAILABLE goes on to the
    next address (the leader, when a standby named one) until its deadline, so
    callers follow a failover without noticing it; mutations carry request ids,
    so a retried one is answered once.  Subclasses build their stubs in
    `_connect` (run again on each switch) and name them in `STUBS` (attribute ->
    full service name)."""

    #: what to call the far end in errors ("cluster manager", "node manager", ...)
    service = "service"
    STUBS: dict[str, str] = {}

    def __init__(self, address: str, user: str = "root", timeout: float = 30.0,
                 tls: Tls | None = None, token: str = "") -> None:
        self.addresses = [a.strip() for a in address.split(",") if a.strip()] or [address]
        self.user = user
        self.timeout = timeout
        self.tls = tls
        self._metadata = user_metadata(user, token)
        self._lock = threading.Lock()
        self._old: list[grpc.Channel] = []
        self._connect(self.addresses[0])

    def _connect(self, address: str) -> None:
        self.address = address
        self._channel = channel(address, self.tls)

    def switch(self, message: str = "") -> bool:
        """After an UNAVAILABLE answer: go to the leader a standby named (if it is
        one of ours), else the next address.  False with a single address."""
        if len(self.addresses) < 2:
            return False
        m = LEADER_RE.search(message)
        with self._lock:
            hint = m.group(1) if m else ""
            if hint in self.addresses and hint != self.address:
                target = hint
            else:
                i = self.addresses.index(self.address) if self.address in self.addresses else -1
                target = self.addresses[(i + 1) % len(self.addresses)]
            # Streams may still run on the old channel: closed with the client.
            self._old.append(self._channel)
            self._connect(target)
        return True

    def _rebind(self, method: Callable[..., R]) -> Callable[..., R]:
        """The same RPC on the current channel's stub."""
        path = getattr(method, "_method", b"")
        path = path.decode() if isinstance(path, bytes) else str(path)
        service, _, name = path.lstrip("/").partition("/")
        for attr, svc in self.STUBS.items():
            if svc == service:
                return getattr(getattr(self, attr), name)  # type: ignore[no-any-return]
        return method

    def close(self) -> None:
        self._channel.close()
        for old in self._old:
            old.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: Callable[..., R], request: Any, timeout: float | None = None) -> R:
        """`method(request)` on a stub of this channel; TashiError on failure (after
        trying the other addresses, when there are several, until the deadline; and
        after sending it again while the server says it is too busy to take it)."""
        limit = timeout or self.timeout
        deadline = time.monotonic() + limit
        tries = 0
        backoff = 0.0
        while True:
            left = max(0.1, deadline - time.monotonic())
            try:
                return method(request, timeout=min(limit, left), metadata=self._metadata)
            except grpc.RpcError as exc:
                err = translate(exc)
                if err.retry_after > 0:
                    backoff = min(max(err.retry_after, 2 * backoff),
                                  max(err.retry_after, DOUBLED_UP_TO))
                    pause = backoff * random.uniform(0.5, 1.5)
                    if time.monotonic() + pause >= deadline:
                        raise err from None
                    time.sleep(pause)
                    continue
                if (err.code != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= deadline
                        or not self.switch(err.message)):
                    raise err from None
            method = self._rebind(method)
            tries += 1
            if tries % len(self.addresses) == 0:  # every address said no: a takeover is
                time.sleep(0.2)                   # under way; ask again shortly

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until a connection is up (to any of the addresses, in turn)."""
        each = timeout / len(self.addresses)
        for _ in self.addresses:
            try:
                grpc.channel_ready_future(self._channel).result(timeout=each)
                return
            except grpc.FutureTimeoutError:
                if not self.switch():
                    break
        raise TashiError(grpc.StatusCode.UNAVAILABLE,
                         f"{self.service} at {', '.join(self.addresses)} did not answer")


class StreamCall(Generic[R]):
    """A call's stream of answers: iterate for the messages, TashiError on failure.
    `cancel()` ends it promptly from any thread; the iteration then just stops."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> StreamCall[R]:
        return self

    def __next__(self) -> R:
        try:
            return next(self._call)  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            if self._cancelled:
                raise StopIteration from None
            raise translate(exc) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    close = cancel

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
