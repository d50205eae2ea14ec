"""Host networking for the node manager: bridges, VLAN and VXLAN links, taps, MACs."""

from tashi.nm.network.converge import HostNetworking
from tashi.nm.network.kernel import NetworkUnavailable
from tashi.nm.network.names import bridge_name, stable_mac, tap_name
from tashi.nm.network.spec import Kind, NetworkSpec
from tashi.nm.network.status import ConvergeResult, NetworkStatus

__all__ = [
    "ConvergeResult",
    "HostNetworking",
    "Kind",
    "NetworkSpec",
    "NetworkStatus",
    "NetworkUnavailable",
    "bridge_name",
    "stable_mac",
    "tap_name",
]
