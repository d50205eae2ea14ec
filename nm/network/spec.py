"""What a host must offer for one network, as a plain value built from the wire type.

Conversion from `tashi.v1.resources_pb2.Network` happens here and only here;
the converger works on `NetworkSpec`.  Invalid parameters do not raise: they
become the reason the network is not available on this host, because the NM
must keep serving its other networks.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from tashi.v1 import resources_pb2 as pb

DEFAULT_MTU = 1500
DEFAULT_VXLAN_PORT = 4789
MIN_MTU = 68
MAX_MTU = 65535
VXLAN_OVERHEAD_IPV4 = 50
"""Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8: the underlay needs mtu + 50."""


class Kind(enum.Enum):
    VLAN = "vlan"
    VXLAN = "vxlan"
    FLAT = "flat"


_KINDS = {
    pb.NETWORK_KIND_VLAN: Kind.VLAN,
    pb.NETWORK_KIND_VXLAN: Kind.VXLAN,
    pb.NETWORK_KIND_FLAT: Kind.FLAT,
}


@dataclass(frozen=True)
class NetworkSpec:
    id: int
    name: str
    kind: Kind | None
    mtu: int = DEFAULT_MTU
    vlan_id: int = 0
    vni: int = 0
    group: str = ""
    peers: tuple[str, ...] = ()
    port: int = DEFAULT_VXLAN_PORT

    @classmethod
    def from_proto(cls, net: pb.Network) -> NetworkSpec:
        return cls(
            id=net.id,
            name=net.name,
            kind=_KINDS.get(net.kind),
            mtu=net.mtu or DEFAULT_MTU,
            vlan_id=net.vlan_id,
            vni=net.vni,
            group=net.group,
            peers=tuple(p.strip() for p in net.peers if p.strip()),
            port=net.port or DEFAULT_VXLAN_PORT,
        )

    def problem(self) -> str:
        """Why these parameters cannot be built on any host, or "" when they can."""
        if self.kind is None:
            return "network kind is not set (want vlan, vxlan or flat)"
        if not MIN_MTU <= self.mtu <= MAX_MTU:
            return f"MTU {self.mtu} is outside {MIN_MTU}..{MAX_MTU}"
        if self.kind is Kind.VLAN and not 1 <= self.vlan_id <= 4094:
            return f"VLAN id {self.vlan_id} is outside 1..4094"
        if self.kind is Kind.VXLAN:
            return self._vxlan_problem()
        return ""

    def _vxlan_problem(self) -> str:
        if not 1 <= self.vni <= 0xFFFFFF:
            return f"VXLAN VNI {self.vni} is outside 1..16777215"
        if not 1 <= self.port <= 65535:
            return f"VXLAN UDP port {self.port} is outside 1..65535"
        if self.group and self.peers:
            return "VXLAN takes a multicast group or a peer list, not both"
        if not self.group and not self.peers:
            return "VXLAN needs a multicast group or a peer list"
        for text in (self.group, *self.peers):
            if not text:
                continue
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                return f"VXLAN address {text!r} is not an IP address"
            if addr.version != 4:
                return f"VXLAN underlay {text} is IPv6; only an IPv4 underlay is supported"
        if self.group and not ipaddress.ip_address(self.group).is_multicast:
            return f"VXLAN group {self.group} is not a multicast address"
        return ""

    def underlay_mtu(self) -> int:
        """MTU the uplink needs so a frame of `mtu` bytes crosses it whole."""
        if self.kind is Kind.VXLAN:
            return self.mtu + VXLAN_OVERHEAD_IPV4
        return self.mtu
