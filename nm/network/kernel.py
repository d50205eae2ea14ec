"""Turning kernel refusals into reasons an operator can act on."""

from __future__ import annotations

import errno
import os

from pyroute2.netlink.exceptions import NetlinkError

_MISSING_KIND = {
    "vlan": "kernel has no 802.1Q VLAN support (module 8021q not loaded)",
    "vxlan": "kernel has no VXLAN support (module vxlan not loaded)",
    "bridge": "kernel has no bridge support (module bridge not loaded)",
}


class NetworkUnavailable(Exception):
    """This host cannot offer a network; the message is the reason the CM shows."""

    @property
    def reason(self) -> str:
        return str(self.args[0])


def missing_kind(kind: str) -> str:
    return _MISSING_KIND.get(kind, f"kernel has no {kind} link support")


def explain(action: str, err: NetlinkError, kind: str = "") -> NetworkUnavailable:
    """A NetworkUnavailable for a failed netlink request made while doing `action`.

    The kernel answers EOPNOTSUPP ("Unknown device type" in iproute2) when a
    link kind's module is neither built in nor loadable, e.g. no 8021q.
    """
    if kind and err.code == errno.EOPNOTSUPP:
        return NetworkUnavailable(missing_kind(kind))
    return NetworkUnavailable(f"{action}: {os.strerror(err.code)}")
