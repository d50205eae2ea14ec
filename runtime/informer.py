"""The one loop that follows the cluster manager: list, then watch from the listing's seq.

Like client-go's reflector: an `Informer` lists the kinds its follower
needs, hands the listing to `Handler.on_list`, then watches from the
listing's sequence and hands each batch of events, in order, to
`Handler.on_events`.  It relists when the CM answers OUT_OF_RANGE (history
trimmed, or reset), every `resync_seconds` as a safety net, on `resync()`,
and after a handler failed; a broken stream or an absent CM is retried with
backoff, resuming from the last sequence the CM said it scanned (filtered
watches advance it past events they skip).  The watch has no deadline but the
resync: a CM that goes silent without closing the connection ends it through
the channel's keepalive (runtime/server.py), within 15 s of its last byte,
logged as "<name>: lost the cluster manager".  `stop()` cancels the in-flight
call and joins the thread.  Handlers run on the informer's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from tashi.runtime.client import ClusterClient, EventStream, TashiError
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

HOST = cmpb.RESOURCE_KIND_HOST
INSTANCE = cmpb.RESOURCE_KIND_INSTANCE
NETWORK = cmpb.RESOURCE_KIND_NETWORK
USER = cmpb.RESOURCE_KIND_USER
LISTABLE = (HOST, INSTANCE, NETWORK)


@dataclass
class Listing:
    hosts: list[pb.Host] = field(default_factory=list)
    instances: list[pb.Instance] = field(default_factory=list)
    networks: list[pb.Network] = field(default_factory=list)
    # Pages may answer at different points of history: the watch starts from the
    # oldest (`seq`), and the state is whole once events reach the newest.
    seq: int = 0
    seq_max: int = 0


class Handler(Protocol):
    def on_list(self, listing: Listing, reason: str) -> None:
        """Replace all state with `listing` (`reason`: why, '' for the first)."""

    def on_events(self, events: list[pb.Event]) -> None:
        """Apply events, in seq order, on top of the last listing."""


def list_kinds(client: ClusterClient, kinds: Iterable[int], host: str | int | None) -> Listing:
    """A listing of `kinds` (hosts, instances, networks), only `host`'s if named."""
    out = Listing()
    seqs: list[tuple[int, int]] = []
    wanted = set(kinds)
    if HOST in wanted:
        hosts, lo, hi = client.list_hosts_at()
        out.hosts = [h for h in hosts if not host or host in (h.id, h.name)]
        seqs.append((lo, hi))
    if INSTANCE in wanted:
        host_id = host if isinstance(host, int) else 0
        instances, lo, hi = client.list_instances_at(host_id=host_id)
        if isinstance(host, str) and host:
            instances = [i for i in instances if i.host_name == host]
        out.instances = instances
        seqs.append((lo, hi))
    if NETWORK in wanted:
        out.networks, lo, hi = client.list_networks_at()
        seqs.append((lo, hi))
    out.seq = min((lo for lo, _ in seqs), default=0)
    out.seq_max = max((hi for _, hi in seqs), default=0)
    return out


class Informer:
    def __init__(self, client: ClusterClient, handler: Handler, *,
                 kinds: Iterable[int] = (), host: str | int | None = None,
                 listed: Iterable[int] | None = None, since: int | None = None,
                 resync_seconds: float = 0.0, max_batch: int = 1000,
                 retry_seconds: float = 0.5, max_retry_seconds: float = 10.0,
                 on_connected: Callable[[], None] | None = None,
                 name: str = "informer") -> None:
        """`kinds`: what to watch (empty: everything); `host`: only that host's
        events; `listed`: what to list (default: the listable ones of `kinds`);
        `since`: resume from this seq without listing first (until OUT_OF_RANGE)."""
        self.client = client
        self.handler = handler
        self.kinds = tuple(kinds)
        self.host = host
        self.listed = tuple(listed) if listed is not None else tuple(
            k for k in LISTABLE if not self.kinds or k in self.kinds)
        self.resync_seconds = resync_seconds
        self.max_batch = max_batch
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.on_connected = on_connected
        self.name = name
        self.connected = threading.Event()
        self.relists = 0
        self.disconnects = 0  # times a connection to the CM was lost (for metrics)
        self._ever_connected = False
        self._seq = since or 0
        self._relist_reason: str | None = "" if since is None else None
        self._cond = threading.Condition()
        self._stopping = False
        self._stream: EventStream | None = None
        self._resync_at = time.monotonic() + resync_seconds
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    @property
    def seq(self) -> int:
        """The last sequence handed on (or scanned past): where a watch resumes."""
        return self._seq

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            stream = self._stream
            self._cond.notify_all()
        if stream is not None:
            stream.cancel()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def resync(self, reason: str = "asked to resync") -> None:
        """Relist as soon as possible (e.g. the follower lost track of its state)."""
        with self._cond:
            self._relist_reason = reason
            stream = self._stream
        if stream is not None:
            stream.cancel()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- the loop --------------------------------------------------------------------
    def run(self) -> None:
        delay = self.retry_seconds
        failed = ""
        stuck_at = -1
        while not self._stopped():
            try:
                if not self.connected.is_set():
                    self.client.wait_ready(timeout=max(1.0, self.retry_seconds))
                    log.info("%s: connected to the cluster manager at %s; watching after seq %d",
                             self.name, self.client.address, self._seq)
                    self.connected.set()
                    self._ever_connected = True
                    if self.on_connected is not None:
                        self.on_connected()
                with self._cond:
                    reason = self._relist_reason
                if reason is not None:
                    self._relist(reason)
                delay, failed = self.retry_seconds, ""
                self._watch()
            except TashiError as exc:
                if self._stopped():
                    return
                if exc.code == grpc.StatusCode.OUT_OF_RANGE:
                    log.warning("%s: %s; relisting", self.name, exc.message)
                    self._want_relist(exc.message)
                    if stuck_at == self._seq:  # a fresh listing was refused too: back off
                        self._pause(delay)
                        delay = min(delay * 2, self.max_retry_seconds)
                    stuck_at = self._seq
                    continue
                if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED and self._resync_due():
                    self._want_relist("periodic resync")
                    continue
                was_connected = self.connected.is_set()
                self.connected.clear()
                if was_connected:
                    self.disconnects += 1
                if str(exc) != failed:
                    if was_connected or self._ever_connected:
                        log.warning("%s: lost the cluster manager at %s (%s); reconnecting",
                                    self.name, self.client.address, exc)
                    else:
                        log.info("%s: waiting for the cluster manager at %s (%s)",
                                 self.name, self.client.address, exc)
                    failed = str(exc)
                self._pause(delay)
                delay = min(delay * 2, self.max_retry_seconds)
            except Exception:  # a handler failed: its state is suspect, start over
                if self._stopped():
                    return
                log.exception("%s: handler failed; relisting", self.name)
                self._want_relist("a handler failed")
                self._pause(delay)
                delay = min(delay * 2, self.max_retry_seconds)

    def _relist(self, reason: str) -> None:
        listing = list_kinds(self.client, self.listed, self.host)
        with self._cond:
            if self._stopping:
                return
            self._relist_reason = None
        self.relists += 1
        self._resync_at = time.monotonic() + self.resync_seconds
        self.handler.on_list(listing, reason)
        self._seq = listing.seq

    def _watch(self) -> None:
        timeout = None
        if self.resync_seconds > 0:
            timeout = max(0.01, self._resync_at - time.monotonic())
        stream = self.client.watch_events(self._seq, self.max_batch, self.kinds, self.host,
                                          timeout=timeout)
        with self._cond:
            if self._stopping or self._relist_reason is not None:
                stream.cancel()
                return
            self._stream = stream
        try:
            for events in stream:
                if events:
                    self.handler.on_events(events)
                self._seq = stream.seq
        finally:
            with self._cond:
                self._stream = None
        with self._cond:
            if self._stopping or self._relist_reason is not None:
                return  # cancelled on purpose
        raise TashiError(grpc.StatusCode.UNAVAILABLE, "event stream ended")

    # -- helpers ------------------------------------------------------------------------
    def _stopped(self) -> bool:
        with self._cond:
            return self._stopping

    def _want_relist(self, reason: str) -> None:
        with self._cond:
            self._relist_reason = reason

    def _resync_due(self) -> bool:
        return self.resync_seconds > 0 and time.monotonic() >= self._resync_at - 0.05

    def _pause(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=seconds)
