"""Keeps this host's networks converged to the cluster manager's list.

One thread follows the CM: it lists the networks, then watches NETWORK_*
events from the sequence the listing is consistent with (relisting on
OUT_OF_RANGE or after the CM was unreachable).  Another converges: at once
when the list changes, and every `resync_seconds` anyway, so a link removed
by hand or left half-made is repaired without any event.  The node manager
reads `statuses()` into its registration and heartbeats, and `bridge_for()`
when it builds a VM's NICs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from tashi.nm.network.converge import HostNetworking
from tashi.nm.network.spec import NetworkSpec
from tashi.nm.network.status import NetworkStatus
from tashi.runtime.auth import user_metadata
from tashi.runtime.client import ClusterClient, TashiError
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

NETWORK_EVENTS = {
    pb.EVENT_TYPE_NETWORK_CREATED,
    pb.EVENT_TYPE_NETWORK_UPDATED,
    pb.EVENT_TYPE_NETWORK_DELETED,
}
RETRY_SECONDS = 1.0
LIST_TIMEOUT = 5.0


class NetworkWatcher:
    def __init__(self, client: ClusterClient, networking: HostNetworking, *,
                 resync_seconds: float = 30.0) -> None:
        self.client = client
        self.networking = networking
        self.resync_seconds = resync_seconds
        self._cond = threading.Condition()
        self._desired: dict[int, pb.Network] | None = None  # None: not listed yet
        self._dirty = False
        self._statuses: tuple[NetworkStatus, ...] = ()
        self._passes = 0
        self._stopping = False
        self._stream: Any = None
        self._threads = [
            threading.Thread(target=self._follow, name="nm-network-watch", daemon=True),
            threading.Thread(target=self._converge_loop, name="nm-network-converge",
                             daemon=True),
        ]

    # -- what the node manager reads --------------------------------------------
    def statuses(self) -> list[pb.HostNetworkStatus]:
        with self._cond:
            return [s.to_proto() for s in self._statuses]

    def bridge_for(self, network_id: int) -> str | None:
        with self._cond:
            for s in self._statuses:
                if s.network_id == network_id:
                    return s.bridge if s.ready else None
        return None

    def network(self, network_id: int) -> pb.Network | None:
        with self._cond:
            return (self._desired or {}).get(network_id)

    # -- lifecycle ----------------------------------------------------------------
    def start(self, first_pass_timeout: float = LIST_TIMEOUT) -> None:
        """Start following; wait up to `first_pass_timeout` for the first convergence
        so the host registers with its network status rather than without."""
        for t in self._threads:
            t.start()
        self.wait_passes(1, first_pass_timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            stream = self._stream
            self._cond.notify_all()
        if stream is not None:
            stream.cancel()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=LIST_TIMEOUT + 1)

    def wait_passes(self, count: int, timeout: float) -> bool:
        """Block until `count` convergence passes have run in total (tests, startup)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._passes >= count or self._stopping,
                                       timeout=timeout) and self._passes >= count

    # -- following the CM -----------------------------------------------------------
    def _follow(self) -> None:
        seq: int | None = None
        failed = ""
        while not self._stopped():
            try:
                if seq is None:
                    seq = self._relist()
                seq = self._watch(seq)
                failed = ""
            except TashiError as exc:
                if exc.code == grpc.StatusCode.OUT_OF_RANGE:
                    seq = None
                    continue
                if str(exc) != failed:
                    log.warning("network watch: %s (retrying)", exc)
                failed = str(exc)
                seq = None
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, timeout=RETRY_SECONDS)

    def _relist(self) -> int:
        # Watch from the lowest seq the pages answered: later network events
        # are replayed on top.
        networks, seq, _newest = self.client.list_networks_at()
        with self._cond:
            self._desired = {n.id: n for n in networks}
            self._dirty = True
            self._cond.notify_all()
        log.debug("networks listed at seq %d: %s", seq, sorted(n.id for n in networks))
        return int(seq)

    def _watch(self, since: int) -> int:
        stream = self.client.cm.WatchEvents(cmpb.WatchEventsRequest(since=since),
                                            metadata=user_metadata(self.client.user))
        with self._cond:
            if self._stopping:
                stream.cancel()
                return since
            self._stream = stream
        try:
            for resp in stream:
                for event in resp.events:
                    since = max(since, event.seq)
                    if event.type in NETWORK_EVENTS:
                        self._apply(event)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise TashiError(exc.code(), exc.details() or "") from None
        finally:
            with self._cond:
                self._stream = None
        if not self._stopped():
            raise TashiError(grpc.StatusCode.UNAVAILABLE, "event stream ended")
        return since

    def _apply(self, event: pb.Event) -> None:
        net = event.network
        with self._cond:
            desired = self._desired if self._desired is not None else {}
            if event.type == pb.EVENT_TYPE_NETWORK_DELETED:
                desired.pop(net.id, None)
            else:
                desired[net.id] = net
            self._desired = desired
            self._dirty = True
            self._cond.notify_all()

    # -- converging --------------------------------------------------------------------
    def _converge_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or (
                    self._dirty and self._desired is not None), timeout=self.resync_seconds)
                if self._stopping:
                    return
                if self._desired is None:
                    continue  # never listed: do not tear down what we cannot judge
                specs = [NetworkSpec.from_proto(n) for n in self._desired.values()]
                self._dirty = False
            try:
                result = self.networking.converge(specs)
            except Exception:  # a bad pass must not end the loop; the next may succeed
                log.exception("network convergence failed")
                continue
            with self._cond:
                before = {s.network_id: s for s in self._statuses}
                self._statuses = result.statuses
                self._passes += 1
                self._cond.notify_all()
            for s in result.statuses:
                if before.get(s.network_id) == s:
                    continue
                if s.ready:
                    log.info("network %d ready on bridge %s", s.network_id, s.bridge)
                else:
                    log.warning("network %d not available: %s", s.network_id, s.reason)

    def _stopped(self) -> bool:
        with self._cond:
            return self._stopping
