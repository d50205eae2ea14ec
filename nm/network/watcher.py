"""Keeps this host's networks converged to the cluster manager's list.

The shared `Informer` follows the CM: it lists the networks, then watches
network events only (and, given the host's name, only this host's events)
from the sequence the listing is consistent with, relisting on
OUT_OF_RANGE and resuming after the CM was unreachable.  Another converges: at once
when the list changes, and every `resync_seconds` anyway, so a link removed
by hand or left half-made is repaired without any event.  The node manager
reads `statuses()` into its registration and heartbeats, and `bridge_for()`
when it builds a VM's NICs.
"""

from __future__ import annotations

import logging
import threading

from tashi.nm.network.converge import HostNetworking
from tashi.nm.network.spec import NetworkSpec
from tashi.nm.network.status import NetworkStatus
from tashi.runtime.client import ClusterClient
from tashi.runtime.informer import NETWORK, Informer, Listing
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
                 resync_seconds: float = 30.0, host: str | None = None) -> None:
        self.client = client
        self.networking = networking
        self.resync_seconds = resync_seconds
        self._cond = threading.Condition()
        self._desired: dict[int, pb.Network] | None = None  # None: not listed yet
        self._dirty = False
        self._statuses: tuple[NetworkStatus, ...] = ()
        self._passes = 0
        self._stopping = False
        self.informer = Informer(client, self, kinds=[NETWORK], host=host,
                                 retry_seconds=RETRY_SECONDS, max_retry_seconds=RETRY_SECONDS,
                                 name="nm-network-watch")
        self._converger = threading.Thread(target=self._converge_loop,
                                           name="nm-network-converge", daemon=True)

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
        self.informer.start()
        self._converger.start()
        self.wait_passes(1, first_pass_timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.informer.stop(timeout=LIST_TIMEOUT + 1)
        if self._converger.is_alive():
            self._converger.join(timeout=LIST_TIMEOUT + 1)

    def wait_passes(self, count: int, timeout: float) -> bool:
        """Block until `count` convergence passes have run in total (tests, startup)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._passes >= count or self._stopping,
                                       timeout=timeout) and self._passes >= count

    # -- the informer's handler -------------------------------------------------------
    def on_list(self, listing: Listing, reason: str) -> None:
        with self._cond:
            self._desired = {n.id: n for n in listing.networks}
            self._dirty = True
            self._cond.notify_all()
        log.debug("networks listed at seq %d: %s", listing.seq,
                  sorted(n.id for n in listing.networks))

    def on_events(self, events: list[pb.Event]) -> None:
        for event in events:
            if event.type in NETWORK_EVENTS:
                self._apply(event)

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
        retry = 0.0  # after a failed pass: seconds until the next try, doubling
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
                retry = min(max(2 * retry, 0.5), self.resync_seconds)
                log.exception("network convergence failed; trying again in %.1f s", retry)
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, timeout=retry)
                    self._dirty = True
                continue
            retry = 0.0
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

