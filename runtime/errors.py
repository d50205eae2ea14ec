"""The one error type every service raises to answer a gRPC status.

Handlers raise `ServiceError` (or one of the helpers below) wherever they
find a request they will not serve; the server interceptor in
`tashi.runtime.interceptors` turns it into the status code and message the
client reads.  Anything else a handler raises is a bug and answers INTERNAL.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc


class ServiceError(Exception):
    """A status code and a message a person can act on."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # > 0: refused before anything was done (the server is busy); the caller
        # may send the same call again after about this many seconds.
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def _status(code: grpc.StatusCode) -> Callable[[str], ServiceError]:
    def make(message: str) -> ServiceError:
        return ServiceError(code, message)
    make.__name__ = code.name.lower()
    return make


invalid = _status(grpc.StatusCode.INVALID_ARGUMENT)
not_found = _status(grpc.StatusCode.NOT_FOUND)
precondition = _status(grpc.StatusCode.FAILED_PRECONDITION)
denied = _status(grpc.StatusCode.PERMISSION_DENIED)
exists = _status(grpc.StatusCode.ALREADY_EXISTS)
unauthenticated = _status(grpc.StatusCode.UNAUTHENTICATED)
out_of_range = _status(grpc.StatusCode.OUT_OF_RANGE)
exhausted = _status(grpc.StatusCode.RESOURCE_EXHAUSTED)
unavailable = _status(grpc.StatusCode.UNAVAILABLE)
aborted = _status(grpc.StatusCode.ABORTED)

# Trailing metadata on a refusal that did nothing and may be sent again as is
# (`ServiceError.retry_after`); `RpcClient.call` waits and retries on it.
RETRY_AFTER_KEY = "tashi-retry-after-ms"


def busy(message: str, retry_after: float = 0.05) -> ServiceError:
    """RESOURCE_EXHAUSTED for a call refused before it did anything: try again."""
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, retry_after)
