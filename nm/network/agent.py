"""Everything host networking adds to a node manager, behind one start/stop.

`--uplink IFACE` turns it on: the watcher converges the CM's networks on
this host and answers `statuses()` (registration and heartbeats) and
`bridge_for()` (a VM's NICs); the DHCP snooper learns the VMs' addresses
and the tracker reports them as instance observations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tashi.nm.driver import Driver
from tashi.nm.model import Observation
from tashi.nm.network.addresses import AddressTracker
from tashi.nm.network.converge import HostNetworking
from tashi.nm.network.dhcp import DhcpSnooper
from tashi.nm.network.watcher import NetworkWatcher
from tashi.runtime.client import ClusterClient
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)


class HostNetworkAgent:
    def __init__(self, client: ClusterClient, driver: Driver, uplink: str, *,
                 netns: str | None = None, resync_seconds: float = 30.0,
                 host: str | None = None) -> None:
        self.driver = driver
        self.netns = netns
        self.networking = HostNetworking(uplink, netns)
        self.watcher = NetworkWatcher(client, self.networking, resync_seconds=resync_seconds,
                                      host=host)
        self.snooper: DhcpSnooper | None = None

    def statuses(self) -> list[pb.HostNetworkStatus]:
        return self.watcher.statuses()

    def bridge_for(self, network_id: int) -> str | None:
        return self.watcher.bridge_for(network_id)

    def start(self, observe: Callable[[Observation], None]) -> None:
        """Converge once (bounded wait, so registration carries the status), then follow."""
        tracker = AddressTracker(self.driver, observe)
        try:
            self.snooper = DhcpSnooper(tracker.on_lease, self.netns)
            self.snooper.start()
        except OSError as exc:  # no CAP_NET_RAW: networks still work, addresses unseen
            log.warning("DHCP address discovery off: %s", exc)
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        if self.snooper is not None:
            self.snooper.stop()
