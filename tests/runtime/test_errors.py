"""One error mapping for every service: what a handler raises becomes a status.

A real server on loopback (runtime.server.start, as every service starts),
plus the cluster manager itself for a crash on a real path.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tashi.cm import images as catalogue
from tashi.runtime import server
from tashi.runtime.client import TashiError
from tashi.runtime.errors import ServiceError, not_found
from tashi.runtime.metrics import ServiceMetrics
from tashi.runtime.server import Service
from tests.harness import InProcCM

SVC = "test.Errors"
ID = re.compile(r"^internal error; id ([0-9a-f]{8})$")


def _key_error(request: bytes, context: grpc.ServicerContext) -> bytes:
    return {}["missing"]  # type: ignore[no-any-return]


def _service_error(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise not_found("no widget named 'w1'")


def _aborts(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
    raise AssertionError("abort returns never")


def _value_error(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise ValueError("a bug, not the caller's fault")


def _breaks_mid_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"1"
    yield b"2"
    raise RuntimeError("lost the event log")


def _refuses_mid_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"1"
    raise ServiceError(grpc.StatusCode.OUT_OF_RANGE, "history before 7 is gone")


def _aborts_mid_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"1"
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")


def _refuses_before_first(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, "admins only")
    yield b"never"  # a generator all the same


HANDLERS = {
    "KeyError": grpc.unary_unary_rpc_method_handler(_key_error),
    "ServiceError": grpc.unary_unary_rpc_method_handler(_service_error),
    "Aborts": grpc.unary_unary_rpc_method_handler(_aborts),
    "ValueError": grpc.unary_unary_rpc_method_handler(_value_error),
    "BreaksMidStream": grpc.unary_stream_rpc_method_handler(_breaks_mid_stream),
    "RefusesMidStream": grpc.unary_stream_rpc_method_handler(_refuses_mid_stream),
    "AbortsMidStream": grpc.unary_stream_rpc_method_handler(_aborts_mid_stream),
    "RefusesBeforeFirst": grpc.unary_stream_rpc_method_handler(_refuses_before_first),
}


def _add(_servicer: Any, srv: grpc.Server) -> None:
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SVC, HANDLERS),))


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    running = server.start("127.0.0.1:0", [Service(SVC, object(), _add)])
    ch = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield ch
    finally:
        ch.close()
        running.stop(0)


def unary(channel: grpc.Channel, method: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/{SVC}/{method}")(b"x", timeout=5)
    return err.value


def stream(channel: grpc.Channel, method: str) -> tuple[list[bytes], grpc.RpcError]:
    got: list[bytes] = []
    with pytest.raises(grpc.RpcError) as err:
        for message in channel.unary_stream(f"/{SVC}/{method}")(b"x", timeout=5):
            got.append(message)
    return got, err.value


def logged_with(caplog: pytest.LogCaptureFixture, error_id: str) -> logging.LogRecord:
    records = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    return records[0]


def test_a_crash_answers_internal_with_an_id_the_log_holds(
        channel: grpc.Channel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    err = unary(channel, "KeyError")
    assert err.code() == grpc.StatusCode.INTERNAL
    match = ID.match(err.details() or "")
    assert match, err.details()
    assert "missing" not in (err.details() or ""), "internals leaked to the client"
    record = logged_with(caplog, match.group(1))
    assert record.levelno == logging.ERROR
    assert f"/{SVC}/KeyError" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is KeyError
    assert "_key_error" in caplog.text and "Traceback" in caplog.text


def test_each_crash_gets_its_own_id(channel: grpc.Channel) -> None:
    ids = {ID.match(unary(channel, "KeyError").details() or "") for _ in range(3)}
    assert None not in ids and len({m.group(1) for m in ids if m}) == 3


def test_a_value_error_is_a_bug_not_invalid_argument(channel: grpc.Channel) -> None:
    err = unary(channel, "ValueError")
    assert err.code() == grpc.StatusCode.INTERNAL and ID.match(err.details() or "")


def test_a_service_error_answers_its_code_and_message(
        channel: grpc.Channel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    err = unary(channel, "ServiceError")
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "no widget named 'w1'")
    assert not caplog.records, "a refusal is no server error"


def test_context_abort_still_answers_what_it_aborted_with(channel: grpc.Channel) -> None:
    err = unary(channel, "Aborts")
    assert (err.code(), err.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")


def test_a_crash_mid_stream_answers_internal_after_what_was_sent(
        channel: grpc.Channel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    got, err = stream(channel, "BreaksMidStream")
    assert got == [b"1", b"2"]
    assert err.code() == grpc.StatusCode.INTERNAL
    match = ID.match(err.details() or "")
    assert match, err.details()
    record = logged_with(caplog, match.group(1))
    assert record.exc_info and record.exc_info[0] is RuntimeError
    assert "lost the event log" in caplog.text


def test_streams_answer_service_errors_and_aborts(channel: grpc.Channel) -> None:
    got, err = stream(channel, "RefusesMidStream")
    assert got == [b"1"]
    assert (err.code(), err.details()) == (grpc.StatusCode.OUT_OF_RANGE,
                                           "history before 7 is gone")
    got, err = stream(channel, "AbortsMidStream")
    assert got == [b"1"]
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "not yours")
    got, err = stream(channel, "RefusesBeforeFirst")
    assert got == []
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "admins only")


def test_metrics_count_the_status_the_client_got() -> None:
    metrics = ServiceMetrics("127.0.0.1:0")
    running = server.start("127.0.0.1:0", [Service(SVC, object(), _add)],
                           interceptors=metrics.interceptors)
    ch = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        unary(ch, "KeyError")
        unary(ch, "ServiceError")
        stream(ch, "BreaksMidStream")
    finally:
        ch.close()
        running.stop(0)

    def handled(method: str, code: str, kind: str = "unary") -> float | None:
        return metrics.registry.get_sample_value("grpc_server_handled_total", {
            "grpc_type": kind, "grpc_service": SVC, "grpc_method": method, "grpc_code": code})

    assert handled("KeyError", "Internal") == 1
    assert handled("ServiceError", "NotFound") == 1
    assert handled("BreaksMidStream", "Internal", "server_stream") == 1


def test_a_crash_in_the_cluster_manager_answers_internal_with_an_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    calls = threading.Event()

    def broken(_cluster: Any) -> list[Any]:
        calls.set()
        raise KeyError("image store index")

    monkeypatch.setattr(catalogue, "list_images", broken)
    caplog.set_level(logging.ERROR)
    cm = InProcCM(tmp_path)
    try:
        client = cm.client()
        assert client.list_hosts() == []  # the server is otherwise fine
        with pytest.raises(TashiError) as err:
            client.list_images()
    finally:
        cm.stop()
    assert calls.is_set()
    assert err.value.code == grpc.StatusCode.INTERNAL
    match = ID.match(err.value.message)
    assert match, err.value.message
    record = logged_with(caplog, match.group(1))
    assert "ClusterManagerService/ListImages" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is KeyError
    assert "image store index" in caplog.text
