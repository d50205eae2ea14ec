"""The shared gRPC server interceptor and /metrics endpoint, on a real server on loopback."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tashi.runtime import server
from tashi.runtime.metrics import GO_CODE_NAMES, ServiceMetrics, split_method
from tashi.runtime.server import Service
from tests.harness import wait_for

SVC = "test.Echo"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _fails(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("boom")


def _not_found(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort returns never")


def _invalid(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
    context.set_details("bad")
    return b""


def _count(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return str(sum(1 for _ in requests)).encode()


def _three(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield from (b"1", b"2", b"3")


def _forever(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    started.set()
    while context.is_active():
        yield b"tick"
        time.sleep(0.02)


started = threading.Event()

HANDLERS = {
    "Echo": grpc.unary_unary_rpc_method_handler(_echo),
    "Fails": grpc.unary_unary_rpc_method_handler(_fails),
    "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
    "Invalid": grpc.unary_unary_rpc_method_handler(_invalid),
    "Count": grpc.stream_unary_rpc_method_handler(_count),
    "Three": grpc.unary_stream_rpc_method_handler(_three),
    "Forever": grpc.unary_stream_rpc_method_handler(_forever),
}


class Echo:
    """A raw generic service, registered like the generated add functions do."""


def _add(_servicer: Any, srv: grpc.Server) -> None:
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SVC, HANDLERS),))


@pytest.fixture
def served() -> Iterator[tuple[ServiceMetrics, grpc.Channel]]:
    metrics = ServiceMetrics("127.0.0.1:0")
    running = server.start("127.0.0.1:0", [Service(SVC, Echo(), _add)],
                           interceptors=metrics.interceptors)
    metrics.serve()
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield metrics, channel
    finally:
        channel.close()
        metrics.stop()
        running.stop(0)


def value(metrics: ServiceMetrics, name: str, method: str, service: str = SVC,
          **labels: str) -> float:
    kind = labels.pop("grpc_type", "unary")
    got = metrics.registry.get_sample_value(name, {
        "grpc_type": kind, "grpc_service": service, "grpc_method": method, **labels})
    return got or 0.0


def call(channel: grpc.Channel, method: str) -> grpc.StatusCode:
    try:
        channel.unary_unary(f"/{SVC}/{method}")(b"x", timeout=5)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_unary_calls_counted_by_status_code(served: tuple[ServiceMetrics, grpc.Channel]) -> None:
    metrics, channel = served
    assert [call(channel, m) for m in ("Echo", "Echo", "Fails", "NotFound", "Invalid")] == [
        grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.INTERNAL,
        grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT]
    handled = "grpc_server_handled_total"
    assert value(metrics, "grpc_server_started_total", "Echo") == 2
    assert value(metrics, handled, "Echo", grpc_code="OK") == 2
    # the error interceptor runs inside the metrics one: a crash counts as the
    # INTERNAL the client got, not gRPC's own UNKNOWN
    assert value(metrics, handled, "Fails", grpc_code="Internal") == 1
    assert value(metrics, handled, "NotFound", grpc_code="NotFound") == 1
    assert value(metrics, handled, "Invalid", grpc_code="InvalidArgument") == 1
    assert value(metrics, handled, "Echo", grpc_code="Unknown") == 0
    # every handled call is timed once; a failed call sent no message
    assert value(metrics, "grpc_server_handling_seconds_count", "Echo") == 2
    assert value(metrics, "grpc_server_handling_seconds_bucket", "Echo", le="+Inf") == 2
    assert value(metrics, "grpc_server_msg_sent_total", "Echo") == 2
    assert value(metrics, "grpc_server_msg_sent_total", "Fails") == 0
    assert value(metrics, "grpc_server_msg_received_total", "Fails") == 1


def test_streams_count_messages_and_cancellation(
        served: tuple[ServiceMetrics, grpc.Channel]) -> None:
    metrics, channel = served
    assert channel.stream_unary(f"/{SVC}/Count")(iter([b"a"] * 4), timeout=5) == b"4"
    assert list(channel.unary_stream(f"/{SVC}/Three")(b"", timeout=5)) == [b"1", b"2", b"3"]
    assert value(metrics, "grpc_server_msg_received_total", "Count",
                 grpc_type="client_stream") == 4
    assert value(metrics, "grpc_server_handled_total", "Count", grpc_type="client_stream",
                 grpc_code="OK") == 1
    assert value(metrics, "grpc_server_msg_sent_total", "Three", grpc_type="server_stream") == 3
    assert value(metrics, "grpc_server_handled_total", "Three", grpc_type="server_stream",
                 grpc_code="OK") == 1

    started.clear()
    stream = channel.unary_stream(f"/{SVC}/Forever")(b"")
    assert started.wait(5)
    next(stream)
    stream.cancel()

    def cancelled() -> float:
        return value(metrics, "grpc_server_handled_total", "Forever",
                     grpc_type="server_stream", grpc_code="Canceled")

    wait_for(lambda: cancelled() == 1, what="the cancelled stream counted as Canceled")
    assert value(metrics, "grpc_server_started_total", "Forever", grpc_type="server_stream") == 1


def test_health_service_is_counted_and_served_over_http(
        served: tuple[ServiceMetrics, grpc.Channel]) -> None:
    metrics, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=SVC), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError):
        health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    with urllib.request.urlopen(f"http://{metrics.address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    handled = {(s.labels["grpc_method"], s.labels["grpc_code"]): s.value
               for s in families["grpc_server_handled"].samples
               if s.labels["grpc_service"] == "grpc.health.v1.Health"}
    assert handled == {("Check", "OK"): 1.0, ("Check", "NotFound"): 1.0}
    assert "process_cpu_seconds" in families  # the process collector rides along
    assert "_created" not in text  # no extra series the Go exporters do not have


def test_off_unless_an_address_is_given() -> None:
    metrics = ServiceMetrics("")
    assert not metrics.enabled
    assert metrics.interceptors == []
    assert metrics.serve() == ""
    metrics.stop()
    with pytest.raises(ValueError):
        ServiceMetrics("no-port-here")


def test_names_follow_the_go_exporters() -> None:
    assert split_method("/tashi.v1.NodeManagerService/StartVm") == (
        "tashi.v1.NodeManagerService", "StartVm")
    assert GO_CODE_NAMES[grpc.StatusCode.CANCELLED] == "Canceled"
    assert GO_CODE_NAMES[grpc.StatusCode.DEADLINE_EXCEEDED] == "DeadlineExceeded"
    assert set(GO_CODE_NAMES) == set(grpc.StatusCode)
