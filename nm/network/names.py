"""The naming scheme of the host links Tashi owns, and stable NIC addresses.

Every link the converger creates is named `tbr<N>` (bridge), `tvx<N>` (VXLAN
device) or `tvl<N>` (VLAN sub-interface) for network id N.  The scheme is the
ownership record: a link whose name matches it belongs to Tashi and may be
repaired or removed; no other link is ever changed (the uplink only gains
sub-interfaces, a bridge master for a flat network and, when a network needs
it, a larger MTU).  Taps are `tt<instance>n<index>`, outside that pattern, so
network convergence never removes a VM's tap.
"""

from __future__ import annotations

import re

from tashi.runtime.macs import MAC_PREFIX, stable_mac  # noqa: F401  (re-exported)

IFNAMSIZ = 15
"""Longest interface name Linux accepts (IFNAMSIZ less the terminating NUL)."""

BRIDGE_PREFIX = "tbr"
VXLAN_PREFIX = "tvx"
VLAN_PREFIX = "tvl"
TAP_PREFIX = "tt"

MANAGED_LINK = re.compile(r"^t(br|vx|vl)(\d+)$")
"""Names of the links the converger owns; group 2 is the network id."""



def _name(prefix: str, network_id: int) -> str:
    if network_id < 0:
        raise ValueError(f"network id must not be negative, got {network_id}")
    name = f"{prefix}{network_id}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"network id {network_id} is too large for an interface name")
    return name


def bridge_name(network_id: int) -> str:
    """The bridge a VM's tap joins for this network."""
    return _name(BRIDGE_PREFIX, network_id)


def vxlan_name(network_id: int) -> str:
    return _name(VXLAN_PREFIX, network_id)


def vlan_name(network_id: int) -> str:
    return _name(VLAN_PREFIX, network_id)


def managed_network_id(ifname: str) -> int | None:
    """The network id a managed link serves, or None for any other link."""
    m = MANAGED_LINK.match(ifname)
    return int(m.group(2)) if m else None


def tap_name(instance_id: int, nic_index: int) -> str:
    """Stable tap name for one NIC of one instance (given to libvirt as target dev)."""
    if instance_id < 0 or nic_index < 0:
        raise ValueError("instance id and NIC index must not be negative")
    name = f"{TAP_PREFIX}{instance_id}n{nic_index}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"instance {instance_id} NIC {nic_index}: tap name {name} too long")
    return name

