"""What every typed client shares: the channel, the per-call timeout and user,
and the one translation of `grpc.RpcError` into `TashiError`.

The clients (`runtime.client.ClusterClient`, `runtime.nm_client.NodeManagerClient`,
`runtime.accounting_client.AccountingClient`) build on `RpcClient`, so callers get
protobuf messages back and `TashiError` (with `.code`) on failure, never a raw
`grpc.RpcError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

import grpc

from tashi.runtime.auth import user_metadata
from tashi.runtime.errors import ServiceError
from tashi.runtime.server import MAX_MESSAGE_BYTES
from tashi.runtime.tls import Tls

R = TypeVar("R")


class TashiError(ServiceError):
    """A failed call: the gRPC status code the service answered and its message
    (the client's side of the one error type)."""


def translate(exc: grpc.RpcError) -> TashiError:
    """The one place a gRPC failure becomes a TashiError."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return TashiError(code, details or "")


def new_request_id() -> str:
    return uuid.uuid4().hex


def channel(address: str, tls: Tls | None = None) -> grpc.Channel:
    """A channel to `address`: mutual TLS with `tls` (the server's certificate must
    name the host of `address`), plaintext without."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_http_proxy", 0),
    ]
    if tls is not None:
        return grpc.secure_channel(address, tls.channel_credentials(), options=options)
    return grpc.insecure_channel(address, options=options)


class RpcClient:
    """One channel to one service address, calls made as `user` with a default timeout."""

    #: what to call the far end in errors ("cluster manager", "node manager", ...)
    service = "service"

    def __init__(self, address: str, user: str = "root", timeout: float = 30.0,
                 tls: Tls | None = None, token: str = "") -> None:
        self.address = address
        self.user = user
        self.timeout = timeout
        self.tls = tls
        self._channel = channel(address, tls)
        self._metadata = user_metadata(user, token)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: Callable[..., R], request: Any, timeout: float | None = None) -> R:
        """`method(request)` on a stub of this channel; TashiError on failure."""
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise TashiError(grpc.StatusCode.UNAVAILABLE,
                             f"{self.service} at {self.address} did not answer") from None


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
