"""Which bridge each of a VM's networks is on, on this host.

The default answers by the networks issue's naming scheme only (bridge
`tbr<N>` for network N, created by `tashi.nm.network.HostNetworking`); when
the node manager converges networks itself it passes `HostNetworking.bridge_for`
so a network that is not ready is refused before libvirt is asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tashi.nm.errors import FailedPrecondition, InvalidArgument
from tashi.nm.network.names import bridge_name
from tashi.v1 import resources_pb2 as pb

DEFAULT_MTU = 1500

BridgeLookup = Callable[[int], str | None]


def bridges_for(networks: Iterable[pb.Network], nic_networks: Iterable[int],
                lookup: BridgeLookup | None = None) -> dict[int, tuple[str, int]]:
    """network id -> (bridge, mtu) for every network a VM's NICs use."""
    by_id = {n.id: n for n in networks}
    out: dict[int, tuple[str, int]] = {}
    for nid in nic_networks:
        try:
            bridge = lookup(nid) if lookup is not None else bridge_name(nid)
        except ValueError as exc:  # an id no bridge can be named for
            raise InvalidArgument(str(exc)) from None
        if not bridge:
            raise FailedPrecondition(f"network {nid} is not ready on this host")
        net = by_id.get(nid)
        out[nid] = (bridge, (net.mtu if net is not None and net.mtu else DEFAULT_MTU))
    return out
