"""Plain views of rtnetlink link and address messages, so the converger compares values."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IFF_UP = 0x1
ENODEV = 19
ZERO_MAC = "00:00:00:00:00:00"
NTF_SELF = 0x02


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str
    """rtnetlink kind ("bridge", "vxlan", "vlan", "veth", ...); "" for a plain device."""
    mtu: int
    max_mtu: int
    master: int
    """Index of the bridge this link is a port of; 0 for none."""
    parent: int
    """IFLA_LINK: the lower device of a VLAN sub-interface; 0 for none."""
    admin_up: bool
    alias: str
    data: dict[str, Any] = field(default_factory=dict)
    """IFLA_INFO_DATA attributes (bridge timers, VXLAN id and port, VLAN id, ...)."""


def parse_link(msg: Any) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = ""
    data: dict[str, Any] = {}
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or ""
        info_data = info.get_attr("IFLA_INFO_DATA")
        if info_data is not None and not isinstance(info_data, str | bytes):
            for nla in info_data["attrs"]:
                data[nla[0]] = nla[1]
    return Link(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        mtu=msg.get_attr("IFLA_MTU") or 0,
        max_mtu=msg.get_attr("IFLA_MAX_MTU") or 0,
        master=msg.get_attr("IFLA_MASTER") or 0,
        parent=msg.get_attr("IFLA_LINK") or 0,
        admin_up=bool(msg["flags"] & IFF_UP),
        alias=msg.get_attr("IFLA_IFALIAS") or "",
        data=data,
    )


def all_links(ipr: IPRoute) -> dict[str, Link]:
    return {link.name: link for link in map(parse_link, ipr.get_links())}


def get_link(ipr: IPRoute, name: str) -> Link | None:
    try:
        msgs = ipr.link("get", ifname=name)
    except NetlinkError as e:
        if e.code == ENODEV:
            return None
        raise
    return parse_link(msgs[0])


def link_by_index(ipr: IPRoute, index: int) -> Link | None:
    try:
        msgs = ipr.link("get", index=index)
    except NetlinkError as e:
        if e.code == ENODEV:
            return None
        raise
    return parse_link(msgs[0])


def addresses(ipr: IPRoute, index: int | None = None) -> list[str]:
    """Addresses a host would lose if the link stopped taking traffic (not IPv6 link-local)."""
    out = []
    for msg in ipr.get_addr():
        if index is not None and msg["index"] != index:
            continue
        text = msg.get_attr("IFA_ADDRESS")
        if text is None:
            continue
        addr = ipaddress.ip_address(text)
        if addr.version == 6 and addr.is_link_local:
            continue
        out.append(text)
    return out


def local_ipv4(ipr: IPRoute) -> set[str]:
    return {
        msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        for msg in ipr.get_addr(family=socket.AF_INET)
    }


def flood_peers(ipr: IPRoute) -> dict[int, set[str]]:
    """Remote VTEPs each VXLAN device floods to (its all-zeros FDB entries), by ifindex.

    One dump for the whole namespace: the kernel does not filter an FDB dump
    by device, so a dump per device would make a pass quadratic.
    """
    peers: dict[int, set[str]] = {}
    for msg in ipr.fdb("dump"):
        if not msg["flags"] & NTF_SELF:
            continue
        dst = msg.get_attr("NDA_DST")
        if msg.get_attr("NDA_LLADDR") == ZERO_MAC and dst:
            peers.setdefault(msg["ifindex"], set()).add(dst)
    return peers
