"""Heartbeats heard by a process of their own.

gRPC Python serves every call of a process through one event-loop thread that
takes the GIL for each step.  While the CM computes (placing, committing,
fanning events out) that thread waits its turn, and at 1,000 hosts the CM
answered heartbeats up to 16 s late, while a plain gRPC server in another
process on the same saturated machine answered within 32 ms (bench_fleet, one
run).  Hosts went down for the CM's deafness, not their own.

So once the CM knows AUTO_HOSTS hosts (or always, with --beat-listen), it
starts a small process serving LivenessService.Beat alone, and shares with it,
per host id below SLOTS: the token of the host's latest registration, whether
the host is up, and when it was last heard; and the interval the CM asks for.
A registration hands the node manager the port and a fresh token; its beats
then go there, and the CM's liveness monitor takes the times heard each round
(`merge`).  Everything else about a host stays in the CM: a beat with a token
not of the latest registration, or for a host the CM has marked down, is
answered "register again", as Heartbeat answers; once the CM's pulse is older
than its lease (a standby may lead) or the expiry, every beat is answered
UNAVAILABLE, so the hosts go to the CMs themselves.  Hosts with larger ids, and
node managers that know no Beat, keep using Heartbeat.
"""

from __future__ import annotations

import ctypes
import hmac
import logging
import multiprocessing
import os
import secrets
import threading
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

from tashi.runtime import server
from tashi.runtime.errors import unavailable
from tashi.runtime.tls import Tls
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import node_registry_pb2_grpc as nr_grpc

log = logging.getLogger(__name__)

SLOTS = 1 << 16  # host ids 1..65535: 1.6 MiB shared
TOKEN = 16
AUTO_HOSTS = 50  # by default the process starts once the CM knows this many hosts
RESTART_SECONDS = 5.0  # after it died (meanwhile the CM hears Heartbeat itself)
SERVICE = nr.DESCRIPTOR.services_by_name["LivenessService"].full_name


# meta: the interval asked for, the CM's pulse (monotonic: when its liveness
# monitor last ran), how old the pulse may grow before this process turns
# hosts away (STALE), and the count of beats heard.
INTERVAL, PULSE, STALE, COUNT = range(4)


class BeatTable:
    """The shared memory: `heard` per host (monotonic seconds), `up` flags,
    `tokens` (zero: none), and `meta`."""

    def __init__(self, parts: tuple[Any, Any, Any, Any]) -> None:
        self.parts = parts
        self.heard, self.up, self.tokens, self.meta = parts

    @classmethod
    def create(cls, ctx: Any) -> BeatTable:
        return cls((ctx.RawArray(ctypes.c_double, SLOTS), ctx.RawArray(ctypes.c_ubyte, SLOTS),
                    ctx.RawArray(ctypes.c_ubyte, SLOTS * TOKEN), ctx.RawArray(ctypes.c_double, 4)))

    def cm_silent(self) -> float:
        """Seconds since the CM's pulse, if that is older than STALE (the CM is
        paused or gone, and another may lead); else 0."""
        silent = time.monotonic() - self.meta[PULSE]
        return silent if silent > self.meta[STALE] else 0.0

    @staticmethod
    def fits(host_id: int) -> bool:
        return 0 < host_id < SLOTS

    def token(self, host_id: int) -> bytes:
        return bytes(self.tokens[host_id * TOKEN:(host_id + 1) * TOKEN])

    # -- the CM's side ------------------------------------------------------------
    def issue(self, host_id: int) -> bytes:
        token = secrets.token_bytes(TOKEN)
        self.up[host_id] = 0  # no beat is taken with half a token
        self.tokens[host_id * TOKEN:(host_id + 1) * TOKEN] = list(token)
        self.heard[host_id] = time.monotonic()
        self.up[host_id] = 1
        return token

    def forget(self, host_id: int) -> None:
        self.up[host_id] = 0
        self.tokens[host_id * TOKEN:(host_id + 1) * TOKEN] = [0] * TOKEN

    # -- the liveness process's side ------------------------------------------------
    def beat(self, host_id: int, token: bytes) -> bool:
        """True (and heard now) if `token` is the host's latest and the host is up."""
        if not self.fits(host_id) or not self.up[host_id]:
            return False
        held = self.token(host_id)
        if not any(held) or not hmac.compare_digest(held, token):
            return False
        self.heard[host_id] = time.monotonic()
        return True


class LivenessServicer(nr_grpc.LivenessServiceServicer):
    def __init__(self, table: BeatTable) -> None:
        self.table = table
        self._lock = threading.Lock()

    def Beat(self, req: nr.BeatRequest, ctx: Any) -> nr.BeatResponse:
        t = self.table
        silent = t.cm_silent()
        if silent:  # the node manager goes to the CMs themselves, and finds the leader
            raise unavailable(f"the cluster manager this process hears for has not run for "
                              f"{silent:.0f} s")
        ok = t.beat(req.host_id, req.token)
        with self._lock:
            t.meta[COUNT] += 1
        return nr.BeatResponse(registered=ok, heartbeat_interval_seconds=t.meta[INTERVAL])


def serve(parts: tuple[Any, Any, Any, Any], listen: str, tls: Tls | None, insecure: bool,
          log_level: str, ready: Connection, parent: int) -> None:
    """The liveness process: serves until the CM that started it is gone."""
    server.setup_logging(log_level)
    try:
        running = server.start(listen, [server.Service(
            SERVICE, LivenessServicer(BeatTable(parts)),
            nr_grpc.add_LivenessServiceServicer_to_server)], max_workers=4, tls=tls,
            insecure=insecure, name="tashi-cm's liveness process")
    except Exception as exc:  # told to the CM, which keeps taking Heartbeat itself
        ready.send(f"cannot serve heartbeats on {listen}: {exc}")
        return
    ready.send(running.port)
    while os.getppid() == parent:
        time.sleep(0.5)
    running.stop(0)


class Beats:
    """The CM's handle on its liveness process (none until `ensure` starts it)."""

    def __init__(self, listen: str, tls: Tls | None, insecure: bool, log_level: str,
                 auto: bool, lease: float = 0.0) -> None:
        """`lease`: with a shared store, the leader's lease: once this CM's pulse is
        older, a standby may lead, and its hosts must beat that one (0: no
        failover; the pulse may be as old as the expiry, at least 5 s)."""
        self.listen, self.tls, self.insecure, self.log_level = listen, tls, insecure, log_level
        self.auto = auto  # start at AUTO_HOSTS hosts, rather than at once
        self.lease = lease
        self._ctx = multiprocessing.get_context("spawn")
        self.table = BeatTable.create(self._ctx)
        self.pulse()
        self.port = 0
        self._proc: Any = None
        self._ready: Connection | None = None
        self._issued: set[int] = set()
        self._lock = threading.Lock()
        self._failed = ""
        self._next_start = 0.0

    # -- the process ----------------------------------------------------------------
    def ensure(self, hosts: int) -> None:
        """From the liveness monitor's rounds: start the process when it is due
        (without waiting for it), note its port once it says, start it again if
        it died (its tokens stay valid: the table outlives it)."""
        if self._ready is not None and self._ready.poll():
            try:
                said: int | str = self._ready.recv()
            except EOFError:  # it died before it could say (its exit is seen below)
                said = ""
            self._ready = None
            if isinstance(said, int):
                self.port = said
                log.info("heartbeats heard by a process of their own (pid %d) on port %d",
                         self._proc.pid, said)
            elif said:
                self._failed = said
                log.error("%s; the cluster manager takes heartbeats itself", said)
        now = time.monotonic()
        if self._proc is not None and not self._proc.is_alive():
            if not self._failed:  # one that could not serve has said why, and stays down
                log.error("the liveness process (pid %d) exited with %s; starting it again "
                          "in %g s", self._proc.pid, self._proc.exitcode, RESTART_SECONDS)
            self._proc.join()
            self._proc, self.port, self._ready = None, 0, None
            self._next_start = now + RESTART_SECONDS
        if (self._proc is None and (not self.auto or hosts >= AUTO_HOSTS)
                and not self._failed and now >= self._next_start):
            ready, child = self._ctx.Pipe(duplex=False)
            proc = self._ctx.Process(
                target=serve, name="tashi-cm-liveness", daemon=True,
                args=(self.table.parts, self.listen, self.tls, self.insecure, self.log_level,
                      child, os.getpid()))
            try:
                proc.start()
            except Exception as exc:  # e.g. no interpreter to spawn: the CM hears them
                log.error("cannot start the liveness process: %s", exc)
                self._next_start = now + RESTART_SECONDS
                ready.close()
            else:
                self._proc, self._ready = proc, ready
            finally:
                child.close()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(5)
        self.port = 0

    # -- what the CM tells and reads --------------------------------------------------
    def ticket(self, host_id: int, fresh: bool) -> tuple[int, bytes]:
        """(port, token) to beat with; `fresh` (a registration) replaces the token.
        (0, b"") while there is no process or the id has no slot."""
        if not self.port or not self.table.fits(host_id):
            return 0, b""
        with self._lock:
            token = self.table.token(host_id)
            if fresh or not any(token):
                token = self.table.issue(host_id)
                self._issued.add(host_id)
            return self.port, token

    def pulse(self) -> None:
        """The CM runs: each round of its liveness monitor, before it waits for the
        cluster's lock (a busy CM is not a paused one)."""
        self.table.meta[PULSE] = time.monotonic()

    def merge(self, hosts: Iterable[tuple[int, bool]], heartbeats: dict[int, float],
              interval: float, expire: float) -> None:
        """Under the CM's lock, each round: the hosts' up flags and the interval go
        out, the times heard come in (for up hosts)."""
        meta = self.table.meta
        meta[INTERVAL], meta[STALE] = interval, self.lease or max(expire, 5.0)
        known = set()
        with self._lock:
            for host_id, up in hosts:
                if host_id not in self._issued:
                    continue
                known.add(host_id)
                self.table.up[host_id] = 1 if up else 0
                if up:
                    heard = self.table.heard[host_id]
                    if heard > heartbeats.get(host_id, 0.0):
                        heartbeats[host_id] = heard
            for host_id in self._issued - known:  # deleted hosts
                self.table.forget(host_id)
            self._issued = known

    def beats(self) -> int:
        return int(self.table.meta[COUNT])
