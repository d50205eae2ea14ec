"""Server bootstrap shared by every service: health, reflection, one listen address."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tashi.runtime import policy
from tashi.runtime.auth import TokenResolver
from tashi.runtime.interceptors import ErrorStatusInterceptor
from tashi.runtime.tls import Tls, TlsError, check_plaintext

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# A peer that stops answering without closing its connection (paused, partitioned,
# a host that froze) is noticed through HTTP/2 keepalive pings, not only by a
# deadline or the next resync: every client channel pings after KEEPALIVE_SECONDS
# without traffic and gives up KEEPALIVE_TIMEOUT_SECONDS later, so a silent server
# is found within their sum (15 s); servers accept those pings (one per 5 s at
# most) and ping idle clients too, ending streams whose caller went silent.
KEEPALIVE_SECONDS = 10
KEEPALIVE_TIMEOUT_SECONDS = 5
CLIENT_KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", KEEPALIVE_SECONDS * 1000),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_SECONDS * 1000),
    # gRPC core (1.5x+) waits for a ping's answer this long, whatever the above says.
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_SECONDS * 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 3 * KEEPALIVE_SECONDS * 1000),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_SECONDS * 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_SECONDS * 1000 // 2),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass
class Service:
    """One gRPC service to serve: its full name, servicer and generated add function."""

    name: str
    servicer: Any
    add: Callable[[Any, grpc.Server], None]


@dataclass
class Running:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    token_port: int = 0
    names: tuple[str, ...] = ()

    def set_serving(self, serving: bool) -> None:
        """Health of every service here (and of the server, ""): SERVING or NOT_SERVING."""
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self.names):
            self.health.set(name, status)

    def stop(self, grace: float = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def start(
    listen: str,
    services: Sequence[Service],
    *,
    max_workers: int = 32,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
    tls: Tls | None = None,
    insecure: bool = False,
    name: str = "the service",
    tokens: TokenResolver | None = None,
    token_listen: str = "",
) -> Running:
    """Start a server on `listen` (port 0 picks a free one) with health and reflection.

    With `tls`, callers must present a certificate of the site CA; without,
    only a loopback address is allowed unless `insecure` (see runtime/tls.py).
    `interceptors` run outermost first; the error interceptor (what handlers
    raise -> status) always runs last, next to the handlers, so the others see
    the status the client gets; it checks the authorization table first."""
    if tls is None:
        check_plaintext(split_address(listen)[0], insecure, name)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[*interceptors, ErrorStatusInterceptor(
            lambda method, context: policy.authorize(method, context, tokens))],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            *SERVER_KEEPALIVE_OPTIONS,
        ],
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for svc in services:
        svc.add(svc.servicer, server)
        health_servicer.set(svc.name, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    names = [svc.name for svc in services] + [
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server)
    try:
        if tls is not None:
            port = server.add_secure_port(listen, tls.server_credentials())
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError:  # grpc's way of saying the address is taken or not ours
        port = 0
    token_port = 0
    if token_listen:
        # TLS without client certificates: callers bring a bearer token instead.
        if tls is None:
            raise TlsError("--token-listen needs --tls-ca, --tls-cert and --tls-key")
        token_port = server.add_secure_port(token_listen, tls.server_only_credentials())
        if token_port == 0:
            raise OSError(f"cannot listen on {token_listen}")
    if port == 0:
        raise OSError(f"cannot listen on {listen}: the port is in use or the address is "
                      "not this machine's")
    server.start()
    return Running(server, port, health_servicer, token_port,
                   tuple(svc.name for svc in services))


def wait_for_signal(on_stop: Callable[[], None]) -> None:
    """Block until SIGINT/SIGTERM, then call `on_stop`."""
    done = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        done.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    done.wait()
    on_stop()


# gRPC Python's event loop is one thread (_serve on a server, the channel's on a
# client) that takes the GIL for every step of every call.  While any other
# thread computes, it waits the interpreter's switch interval for each: 5 ms by
# default, about 200 steps a second, and heartbeats queued for seconds behind a
# createMany or a batch of starts until their hosts expired.  Measured at 1,000
# hosts (bench_fleet): heartbeats the CM handled after the fill, of 500/s sent,
# 87-310/s in eight runs at 5 ms, 414-557/s in five at 0.5 ms; 0.1 ms cost more
# CPU and helped no further.
SWITCH_INTERVAL = 0.0005


def prompt_event_loop() -> None:
    """For tashi-cm, whose thousand hosts' heartbeats must be heard on time while it
    computes.  (Not the node managers: in bench/fleet.py's processes, each with a
    thousand threads, it tripled their CPU per VM; a real NM is unmeasured.)"""
    sys.setswitchinterval(SWITCH_INTERVAL)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
