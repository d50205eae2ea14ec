"""The server interceptor that answers every handler's errors the same way.

`runtime.server.start` installs it innermost (next to the handlers), so the
metrics interceptor outside it counts the status the client really gets.

- `ServiceError`: its code and message.
- `context.abort(...)` inside a handler: untouched, gRPC answers what was aborted with.
- anything else: INTERNAL with a short random id in the message; the same id
  and the full traceback go to the log, so an operator can find the one from
  the other without the client seeing internals.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from tashi.runtime.auth import CURRENT, Principal
from tashi.runtime.errors import RETRY_AFTER_KEY, ServiceError

log = logging.getLogger(__name__)

SERVER_SIDE = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                         grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNAVAILABLE})

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def new_error_id() -> str:
    return secrets.token_hex(4)


def _aborted(exc: Exception, context: grpc.ServicerContext) -> bool:
    """True for the bare `Exception()` that `context.abort` raises after it set the status."""
    return type(exc) is Exception and not exc.args and context.code() is not None  # type: ignore[attr-defined]


def answer(method: str, exc: Exception, context: grpc.ServicerContext) -> NoReturn:
    """Abort the call with the status `exc` stands for (see the module docstring)."""
    if isinstance(exc, ServiceError):
        # The client's mistakes are the client's to read; the server's own
        # failures (a hypervisor refusing, say) are worth an operator's look.
        level = logging.WARNING if exc.code in SERVER_SIDE else logging.DEBUG
        log.log(level, "%s: %s %s", method, exc.code.name, exc.message)
        if exc.retry_after > 0:
            context.set_trailing_metadata(((RETRY_AFTER_KEY, str(int(exc.retry_after * 1000))),))
        context.abort(exc.code, exc.message)
    error_id = new_error_id()
    log.exception("%s failed: internal error; id %s", method, error_id, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error; id {error_id}")
    raise AssertionError("context.abort returns never")


# Who may call: answers the caller, or raises (PERMISSION_DENIED, UNAUTHENTICATED).
Gate = Callable[[str, grpc.ServicerContext], Principal]


class ErrorStatusInterceptor(grpc.ServerInterceptor):
    """Maps what handlers raise to gRPC statuses, for unary and streaming responses.

    `gate(method, context)` runs before each handler (the authorization
    table); what it raises is answered the same way."""

    def __init__(self, gate: Gate | None = None) -> None:
        self.gate = gate

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        decode = _lenient(handler.request_deserializer)
        encode = _encoded(handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _single(method, handler.unary_unary, self.gate),
                request_deserializer=decode, response_serializer=encode)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(method, handler.unary_stream, self.gate),
                request_deserializer=decode, response_serializer=encode)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _single(method, _each_decoded(handler.stream_unary), self.gate),
                request_deserializer=decode, response_serializer=encode)
        return grpc.stream_stream_rpc_method_handler(
            _streaming(method, _each_decoded(handler.stream_stream), self.gate),
            request_deserializer=decode, response_serializer=encode)


class Encoded:
    """A response a handler made as the bytes of its message (the CM's listing,
    from bytes kept per instance): sent as they are, not parsed to be
    serialized again."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _encoded(encode: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    if encode is None:
        return None

    def run(response: Any) -> bytes:
        return response.data if type(response) is Encoded else encode(response)

    return run


class Undecodable:
    """A request whose bytes are not the message the method takes."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """gRPC answers INTERNAL for bytes it cannot decode; this hands them on, so the
    handler wrapper can answer INVALID_ARGUMENT (the caller's fault)."""
    if decode is None:
        return None

    def run(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # DecodeError, and whatever a decoder may raise
            return Undecodable(exc)

    return run


def _decoded(arg: Any) -> None:
    if isinstance(arg, Undecodable):
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                           "the request is not a valid message of this method's type")


def _each_decoded(behavior: Behavior) -> Behavior:
    """A client stream's messages as the handler iterates them, each checked like
    a unary request (gRPC itself would answer INTERNAL for one it cannot decode)."""

    def checked(requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            _decoded(request)
            yield request

    def run(requests: Any, context: grpc.ServicerContext) -> Any:
        return behavior(checked(requests), context)

    return run


def _single(method: str, behavior: Behavior, gate: Gate | None = None) -> Behavior:
    def run(arg: Any, context: grpc.ServicerContext) -> Any:
        mark = None
        try:
            if gate is not None:
                mark = CURRENT.set(gate(method, context))
            _decoded(arg)
            return behavior(arg, context)
        except Exception as exc:
            if _aborted(exc, context):
                raise
            answer(method, exc, context)
        finally:
            if mark is not None:
                CURRENT.reset(mark)

    return run


def _streaming(method: str, behavior: Behavior, gate: Gate | None = None
               ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def run(arg: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        mark = None
        try:
            if gate is not None:
                mark = CURRENT.set(gate(method, context))
            _decoded(arg)
            yield from behavior(arg, context)
        except Exception as exc:  # GeneratorExit (client left) is no Exception: passes
            if _aborted(exc, context):
                raise
            answer(method, exc, context)
        finally:
            if mark is not None:
                try:
                    CURRENT.reset(mark)
                except ValueError:  # closed from another thread (the client left)
                    CURRENT.set(None)

    return run
