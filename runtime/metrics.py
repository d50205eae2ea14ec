"""Prometheus metrics every service shares: the gRPC server interceptor and `/metrics`.

The gRPC metrics carry the names and labels of the common gRPC exporters
(go-grpc-prometheus, go-grpc-middleware's prometheus provider), so the
dashboards and alerts operators already have work unchanged:
`grpc_server_started_total`, `grpc_server_handled_total` (with `grpc_code`
spelled as Go spells it: OK, NotFound, ...), `grpc_server_msg_received_total`,
`grpc_server_msg_sent_total` and the `grpc_server_handling_seconds` histogram,
all labelled `grpc_type`, `grpc_service`, `grpc_method`.

Each service gets its own registry (`ServiceMetrics`), so several services in
one test process never collide; nothing is installed or served unless
`--metrics-listen HOST:PORT` is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from tashi.runtime.server import split_address
from tashi.v1 import cluster_manager_pb2 as cmpb

if TYPE_CHECKING:
    from tashi.runtime.informer import Informer

log = logging.getLogger(__name__)

# Go's prometheus.DefBuckets, which the Go gRPC exporters use for handling time.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

S = grpc.StatusCode
# grpc_code values as the Go exporters write them (codes.Code.String()).
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    S.OK: "OK", S.CANCELLED: "Canceled", S.UNKNOWN: "Unknown",
    S.INVALID_ARGUMENT: "InvalidArgument", S.DEADLINE_EXCEEDED: "DeadlineExceeded",
    S.NOT_FOUND: "NotFound", S.ALREADY_EXISTS: "AlreadyExists",
    S.PERMISSION_DENIED: "PermissionDenied", S.RESOURCE_EXHAUSTED: "ResourceExhausted",
    S.FAILED_PRECONDITION: "FailedPrecondition", S.ABORTED: "Aborted",
    S.OUT_OF_RANGE: "OutOfRange", S.UNIMPLEMENTED: "Unimplemented", S.INTERNAL: "Internal",
    S.UNAVAILABLE: "Unavailable", S.DATA_LOSS: "DataLoss",
    S.UNAUTHENTICATED: "Unauthenticated",
}

UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI_STREAM = (
    "unary", "client_stream", "server_stream", "bidi_stream")


def split_method(full: str) -> tuple[str, str]:
    """'/tashi.v1.NodeManagerService/StartVm' -> ('tashi.v1.NodeManagerService', 'StartVm')."""
    service, _, method = full.lstrip("/").rpartition("/")
    return (service, method) if service else ("unknown", full)


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return BIDI_STREAM
    if handler.request_streaming:
        return CLIENT_STREAM
    if handler.response_streaming:
        return SERVER_STREAM
    return UNARY


def final_code(context: grpc.ServicerContext, raised: bool) -> grpc.StatusCode:
    """The status the client gets: what the handler set or aborted with; UNKNOWN
    for an exception that set none (gRPC's own rule); CANCELLED when the client left."""
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    if code is not None:
        return code
    if raised:
        return S.UNKNOWN
    return S.OK if context.is_active() else S.CANCELLED


class _Method:
    """The label children of one method, looked up once instead of per call."""

    def __init__(self, m: GrpcServerMetrics, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.started = m.started.labels(*labels)
        self.received = m.received.labels(*labels)
        self.sent = m.sent.labels(*labels)
        self.seconds = m.seconds.labels(*labels)
        self._handled = m.handled
        self._by_code: dict[grpc.StatusCode, Any] = {}

    def done(self, code: grpc.StatusCode, start: float) -> None:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code.setdefault(
                code, self._handled.labels(*self.labels, GO_CODE_NAMES.get(code, code.name)))
        child.inc()
        self.seconds.observe(time.perf_counter() - start)


class GrpcServerMetrics(grpc.ServerInterceptor):
    """Counts and times every RPC the server handles."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started", "Total number of RPCs started on the server.",
            labels, registry=registry)
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*labels, "grpc_code"), registry=registry)
        self.received = Counter(
            "grpc_server_msg_received", "Total number of RPC stream messages received on "
            "the server.", labels, registry=registry)
        self.sent = Counter(
            "grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.",
            labels, registry=registry)
        self.seconds = Histogram(
            "grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC "
            "that had been application-level handled by the server.", labels,
            buckets=HANDLING_BUCKETS, registry=registry)
        self._methods: dict[str, _Method] = {}
        self._lock = threading.Lock()

    def _method(self, full: str, kind: str) -> _Method:
        m = self._methods.get(full)
        if m is None:
            with self._lock:
                m = self._methods.get(full)
                if m is None:
                    m = self._methods[full] = _Method(self, (kind, *split_method(full)))
        return m

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        kind = rpc_type(handler)
        m = self._method(handler_call_details.method, kind)  # type: ignore[attr-defined]
        wrap = {UNARY: (self._unary_in, False, grpc.unary_unary_rpc_method_handler,
                        handler.unary_unary),
                SERVER_STREAM: (self._unary_in, True, grpc.unary_stream_rpc_method_handler,
                                handler.unary_stream),
                CLIENT_STREAM: (self._stream_in, False, grpc.stream_unary_rpc_method_handler,
                                handler.stream_unary),
                BIDI_STREAM: (self._stream_in, True, grpc.stream_stream_rpc_method_handler,
                              handler.stream_stream)}[kind]
        arg_wrap, streaming_out, make, behavior = wrap
        body = _streaming(m, behavior) if streaming_out else _single(m, behavior)

        def call(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            m.started.inc()
            return body(arg_wrap(m, request_or_iterator), context)

        return make(call, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)

    @staticmethod
    def _unary_in(m: _Method, request: Any) -> Any:
        m.received.inc()
        return request

    @staticmethod
    def _stream_in(m: _Method, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            m.received.inc()
            yield request


def _single(m: _Method, behavior: Callable[[Any, grpc.ServicerContext], Any]
            ) -> Callable[[Any, grpc.ServicerContext], Any]:
    def run(arg: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            response = behavior(arg, context)
        except BaseException:
            m.done(final_code(context, raised=True), start)
            raise
        m.sent.inc()
        m.done(final_code(context, raised=False), start)
        return response

    return run


def _streaming(m: _Method, behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]
               ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def run(arg: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        code: grpc.StatusCode | None = None
        try:
            for response in behavior(arg, context):
                m.sent.inc()
                yield response
        except GeneratorExit:  # gRPC stopped reading: the client went away
            code = S.CANCELLED
            raise
        except BaseException:
            code = final_code(context, raised=True)
            raise
        finally:
            m.done(code or final_code(context, raised=False), start)

    return run


# -- the CM's event sequence, for the services that follow it ----------------------

def cm_last_sequence(client: Any, timeout: float = 2.0) -> int | None:
    """The CM's last event sequence, from the cheapest call that answers it (a
    one-host ListHosts page); None when the CM does not answer in `timeout`."""
    try:
        resp = client.call(client.cm.ListHosts, cmpb.ListHostsRequest(page_size=1),
                           timeout=timeout)
    except Exception:  # TashiError or anything else: the probe is best-effort
        return None
    return int(resp.seq)


def cm_connection(prefix: str, informer: Informer | None) -> Iterator[Metric]:
    """A follower's link to the CM, from its informer (None: not started yet):
    `<prefix>_cm_connected` (1 while its watch is up) and
    `<prefix>_cm_disconnects_total` (connections lost: a restart, or a silent CM
    found by keepalive)."""
    up = informer is not None and informer.connected.is_set()
    yield GaugeMetricFamily(f"{prefix}_cm_connected",
                            "1 while the watch on the cluster manager is connected.",
                            value=1 if up else 0)
    yield CounterMetricFamily(f"{prefix}_cm_disconnects",
                              "Times the connection to the cluster manager was lost.",
                              value=informer.disconnects if informer is not None else 0)


# -- one service's registry and HTTP endpoint -------------------------------------------

class ServiceMetrics:
    """A service's metrics: its own registry (process, Python and gRPC metrics plus
    the service's collectors) served on `listen`.  With `listen` empty it is off:
    no interceptor, no collector, no port."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.registry = CollectorRegistry()
        self.grpc: GrpcServerMetrics | None = None
        self.address = ""
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        if listen:
            try:  # a bad address fails at start-up, not at first scrape
                split_address(listen)
            except ValueError as exc:
                raise ValueError(f"--metrics-listen: {exc}") from None
            # No `_created` series beside each counter: the Go exporters have none, and
            # they would double the series count.  (A process-wide switch; one service
            # per process.)
            disable_created_metrics()
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
            self.grpc = GrpcServerMetrics(self.registry)

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return [self.grpc] if self.grpc is not None else []

    def register(self, *collectors: Collector) -> None:
        if self.enabled:
            for collector in collectors:
                self.registry.register(collector)

    def serve(self, *collectors: Collector) -> str:
        """Register `collectors` and serve /metrics; returns HOST:PORT really bound
        ("" when off)."""
        if not self.enabled:
            return ""
        self.register(*collectors)
        host, port = split_address(self.listen)
        try:
            self._httpd, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self.listen}: {exc.strerror or exc}"
                          ) from None
        bound = self._httpd.server_port
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        log.info("serving metrics on http://%s/metrics", self.address)
        return self.address

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

