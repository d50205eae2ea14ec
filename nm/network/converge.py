"""Converge a host's links to the networks the cluster manager lists.

One pass reads the links as they are, removes the managed links of networks
no longer wanted, then builds or repairs each wanted network: its lower
device (VLAN sub-interface of the uplink, VXLAN device, or the uplink itself
for a flat network), its bridge (STP off, forward delay 0 and hello time at
the kernel's 1 s minimum, as Tashi's hosts were set, so a new tap forwards at
once) and the MTU on every link of the path.  Each step compares before it
changes, so a second pass changes nothing, and a link left half-made by a
crash (missing, down, wrong MTU, wrong master, wrong parameters) is repaired.
A network that cannot be built gets a reason instead; the others go on.

Only links named by `names.MANAGED_LINK` are ever created, changed or
removed.  The uplink is given sub-interfaces, a bridge master (flat
networks only) and, when a network needs it, a larger MTU -- never smaller,
and its addresses are never touched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from tashi.nm.network import links as ln
from tashi.nm.network.kernel import NetworkUnavailable, explain
from tashi.nm.network.names import (
    bridge_name,
    managed_network_id,
    vlan_name,
    vxlan_name,
)
from tashi.nm.network.spec import Kind, NetworkSpec
from tashi.nm.network.status import ConvergeResult, NetworkStatus

log = logging.getLogger(__name__)

BRIDGE_FORWARD_DELAY = 0
"""Centiseconds.  With STP off a port forwards at once; 0 keeps it so if STP is turned on."""
BRIDGE_HELLO_TIME = 100
"""Centiseconds; the kernel's minimum (1 s)."""
BRIDGE_SETTINGS = {
    "IFLA_BR_FORWARD_DELAY": ("br_forward_delay", BRIDGE_FORWARD_DELAY),
    "IFLA_BR_HELLO_TIME": ("br_hello_time", BRIDGE_HELLO_TIME),
    "IFLA_BR_STP_STATE": ("br_stp_state", 0),
}


def open_netlink(netns: str | None) -> IPRoute:
    """An rtnetlink socket in `netns` (which must exist), or in our own namespace."""
    if netns is None:
        return IPRoute()
    return IPRoute(netns=netns, flags=0)


class HostNetworking:
    """The host side of Tashi networks on one uplink, in one network namespace.

    `netns=None` is the node manager's own namespace (production); tests pass
    the name of a namespace they created (under /run/netns) or a path such as
    /proc/PID/ns/net.  Passes are serialised, so the NM's
    network watcher and a VM start may both call in.
    """

    def __init__(self, uplink: str, netns: str | None = None) -> None:
        self.uplink = uplink
        self.netns = netns
        self._lock = threading.Lock()
        self._bridges: dict[int, str] = {}

    def converge(self, networks: Iterable[NetworkSpec]) -> ConvergeResult:
        with self._lock, open_netlink(self.netns) as ipr:
            result = _Pass(ipr, self.uplink).run(networks)
        self._bridges = {s.network_id: s.bridge for s in result.statuses if s.ready}
        for change in result.changes:
            log.info("network: %s", change)
        return result

    def bridge_for(self, network_id: int) -> str | None:
        """Bridge of a network that was ready after the last pass, else None."""
        return self._bridges.get(network_id)

    def attach_tap(self, tap: str, bridge: str, mtu: int) -> None:
        """Make an existing tap a port of `bridge` with `mtu`, up (idempotent).

        libvirt does this itself for `<interface type='bridge'>`; this is for
        taps made outside libvirt or moved into the namespace afterwards.
        """
        with self._lock, open_netlink(self.netns) as ipr:
            tap_link = ln.get_link(ipr, tap)
            br = ln.get_link(ipr, bridge)
            if tap_link is None or br is None:
                missing = tap if tap_link is None else bridge
                raise NetworkUnavailable(f"attach {tap} to {bridge}: {missing} not found")
            if tap_link.mtu != mtu:
                ipr.link("set", index=tap_link.index, mtu=mtu)
            if tap_link.master != br.index:
                ipr.link("set", index=tap_link.index, master=br.index)
            if not tap_link.admin_up:
                ipr.link("set", index=tap_link.index, state="up")


class _Pass:
    """One convergence pass over one open netlink socket."""

    def __init__(self, ipr: IPRoute, uplink: str) -> None:
        self.ipr = ipr
        self.uplink_name = uplink
        self.changes: list[str] = []
        self.links: dict[str, ln.Link] = {}  # one dump per pass, refreshed after each change
        self._peers: dict[int, set[str]] | None = None  # flood lists, read once per pass
        self._local: set[str] | None = None

    def run(self, networks: Iterable[NetworkSpec]) -> ConvergeResult:
        desired: dict[int, NetworkSpec] = {}
        for spec in networks:
            desired.setdefault(spec.id, spec)
        self.links = ln.all_links(self.ipr)
        uplink = self.links.get(self.uplink_name)
        self._remove_unwanted(dict(self.links), desired, uplink)
        statuses = tuple(self._converge_one(desired[i]) for i in sorted(desired))
        return ConvergeResult(statuses=statuses, changes=tuple(self.changes))

    # -- removal -----------------------------------------------------------

    def _wanted_names(self, spec: NetworkSpec, uplink: ln.Link | None) -> set[str]:
        wanted = set()
        if not (spec.kind is Kind.FLAT and uplink is not None and uplink.kind == "bridge"):
            wanted.add(bridge_name(spec.id))
        if spec.kind is Kind.VXLAN:
            wanted.add(vxlan_name(spec.id))
        elif spec.kind is Kind.VLAN:
            wanted.add(vlan_name(spec.id))
        return wanted

    def _remove_unwanted(
        self, current: dict[str, ln.Link], desired: dict[int, NetworkSpec],
        uplink: ln.Link | None,
    ) -> None:
        wanted: set[str] = set()
        for spec in desired.values():
            wanted |= self._wanted_names(spec, uplink)
        for link in current.values():
            if link.name == self.uplink_name or managed_network_id(link.name) is None:
                continue
            if link.name not in wanted:
                self._delete(link, "no longer wanted")

    def _delete(self, link: ln.Link, why: str) -> None:
        try:
            self.ipr.link("del", index=link.index)
        except NetlinkError as e:
            if e.code != ln.ENODEV:  # a VLAN goes with its parent; already gone is fine
                raise
        self.links.pop(link.name, None)
        self.changes.append(f"deleted {link.kind or 'link'} {link.name} ({why})")

    # -- one network ---------------------------------------------------------

    def _converge_one(self, spec: NetworkSpec) -> NetworkStatus:
        problem = spec.problem()
        if problem:
            return NetworkStatus(spec.id, False, problem)
        try:
            bridge = self._build(spec)
        except NetworkUnavailable as e:
            return NetworkStatus(spec.id, False, e.reason)
        except NetlinkError as e:
            return NetworkStatus(spec.id, False, explain("netlink", e).reason)
        return NetworkStatus(spec.id, True, "", bridge)

    def _build(self, spec: NetworkSpec) -> str:
        uplink = self.links.get(self.uplink_name)
        if uplink is None:
            raise NetworkUnavailable(f"uplink {self.uplink_name} not found")
        if not uplink.admin_up:
            raise NetworkUnavailable(f"uplink {self.uplink_name} is down")
        uplink = self._ensure_uplink_mtu(uplink, spec.underlay_mtu())
        if spec.kind is Kind.FLAT:
            return self._build_flat(spec, uplink)
        if spec.kind is Kind.VLAN:
            lower = self._ensure_vlan(spec, uplink)
        else:
            lower = self._ensure_vxlan(spec, uplink)
        bridge = self._ensure_bridge(spec)
        self._ensure_port(lower, bridge, spec.mtu)
        return bridge.name

    def _build_flat(self, spec: NetworkSpec, uplink: ln.Link) -> str:
        if uplink.kind == "bridge":
            # The operator bridged the uplink (keeping the host's address on
            # the bridge); VMs join that bridge as it is.
            return uplink.name
        name = bridge_name(spec.id)
        if uplink.master:
            owner = ln.link_by_index(self.ipr, uplink.master)
            if owner is None or owner.name != name:
                owner_name = owner.name if owner else f"index {uplink.master}"
                raise NetworkUnavailable(
                    f"uplink {uplink.name} is already a port of bridge {owner_name}"
                )
        else:
            held = ln.addresses(self.ipr, uplink.index)
            if held:
                raise NetworkUnavailable(
                    f"uplink {uplink.name} carries addresses ({', '.join(held)}) that a flat "
                    "network would cut off; put them on a bridge and give that bridge as uplink"
                )
        bridge = self._ensure_bridge(spec)
        if uplink.master != bridge.index:
            self._set(uplink, f"made uplink {uplink.name} a port of {bridge.name}",
                      master=bridge.index)
        return bridge.name

    # -- links ---------------------------------------------------------------

    def _ensure_uplink_mtu(self, uplink: ln.Link, need: int) -> ln.Link:
        if uplink.mtu >= need:
            return uplink
        if uplink.max_mtu and need > uplink.max_mtu:
            raise NetworkUnavailable(
                f"uplink {uplink.name} cannot carry MTU {need} (its maximum is {uplink.max_mtu})"
            )
        self._set(uplink, f"raised uplink {uplink.name} MTU {uplink.mtu} -> {need}", mtu=need)
        return self._cached(uplink.name)

    def _ensure_vlan(self, spec: NetworkSpec, uplink: ln.Link) -> ln.Link:
        name = vlan_name(spec.id)
        link = self.links.get(name)
        if link is not None and (
            link.kind != "vlan"
            or link.data.get("IFLA_VLAN_ID") != spec.vlan_id
            or link.parent != uplink.index
        ):
            self._delete(link, "parameters changed")
            link = None
        if link is None:
            self._add(name, "vlan", f"created VLAN {spec.vlan_id} sub-interface {name} "
                      f"on {uplink.name}", vlan_id=spec.vlan_id, link=uplink.index,
                      mtu=spec.mtu)
            link = self._reread(name)
        return link

    def _ensure_vxlan(self, spec: NetworkSpec, uplink: ln.Link) -> ln.Link:
        name = vxlan_name(spec.id)
        link = self.links.get(name)
        if link is not None and (
            link.kind != "vxlan"
            or link.data.get("IFLA_VXLAN_ID") != spec.vni
            or link.data.get("IFLA_VXLAN_PORT") != spec.port
            or link.data.get("IFLA_VXLAN_LINK") != uplink.index
            or (link.data.get("IFLA_VXLAN_GROUP") or "") != spec.group
        ):
            self._delete(link, "parameters changed")
            link = None
        if link is None:
            params: dict[str, Any] = {
                "vxlan_id": spec.vni, "vxlan_port": spec.port, "vxlan_link": uplink.index,
                "vxlan_learning": 1, "mtu": spec.mtu,
            }
            if spec.group:
                params["vxlan_group"] = spec.group
            self._add(name, "vxlan", f"created VXLAN {spec.vni} device {name} on "
                      f"{uplink.name}", **params)
            link = self._reread(name)
        self._ensure_flood_peers(link, spec)
        return link

    def _ensure_flood_peers(self, link: ln.Link, spec: NetworkSpec) -> None:
        """Head-end replication to the peer list, skipping this host's own addresses."""
        if self._peers is None or self._local is None:
            self._peers = ln.flood_peers(self.ipr)
            self._local = ln.local_ipv4(self.ipr)
        want = set(spec.peers) - self._local
        # A multicast group is the device's own default remote, listed by the
        # kernel as an all-zeros entry too: never ours to remove.
        have = set(self._peers.get(link.index, ())) - {spec.group}
        for peer in sorted(want - have):
            self._fdb("append", link, peer, f"added VXLAN peer {peer} to {link.name}")
        for peer in sorted(have - want):
            self._fdb("del", link, peer, f"removed VXLAN peer {peer} from {link.name}")

    def _ensure_bridge(self, spec: NetworkSpec) -> ln.Link:
        name = bridge_name(spec.id)
        link = self.links.get(name)
        if link is not None and link.kind != "bridge":
            self._delete(link, "not a bridge")
            link = None
        if link is None:
            settings = {key: value for key, value in BRIDGE_SETTINGS.values()}
            self._add(name, "bridge", f"created bridge {name}", **settings)
            link = self._reread(name)
        wrong = {
            key: value for attr, (key, value) in BRIDGE_SETTINGS.items()
            if link.data.get(attr) != value
        }
        if wrong:
            self._set(link, f"set {name} {wrong}", kind="bridge", **wrong)
        # Set after creation rather than in the create request: a changed MTU
        # counts as the operator's, so a port with a smaller MTU joining later
        # does not shrink the bridge (and with it the whole network).
        if link.mtu != spec.mtu:
            self._set(link, f"set {name} MTU {link.mtu} -> {spec.mtu}", mtu=spec.mtu)
        alias = f"tashi network {spec.id} {spec.name}".strip()[:255]
        if link.alias != alias:
            self._set(link, f"labelled {name} {alias!r}", ifalias=alias)
        if not link.admin_up:
            self._set(link, f"brought {name} up", state="up")
        return self._cached(name)

    def _ensure_port(self, lower: ln.Link, bridge: ln.Link, mtu: int) -> None:
        if lower.mtu != mtu:
            self._set(lower, f"set {lower.name} MTU {lower.mtu} -> {mtu}", mtu=mtu)
        if lower.master != bridge.index:
            self._set(lower, f"made {lower.name} a port of {bridge.name}", master=bridge.index)
        if not lower.admin_up:
            self._set(lower, f"brought {lower.name} up", state="up")

    # -- netlink requests, each recorded as a change -------------------------

    def _add(self, name: str, kind: str, change: str, **params: Any) -> None:
        try:
            self.ipr.link("add", ifname=name, kind=kind, **params)
        except NetlinkError as e:
            raise explain(f"create {kind} {name}", e, kind) from e
        self.changes.append(change)

    def _set(self, link: ln.Link, change: str, **params: Any) -> None:
        try:
            self.ipr.link("set", index=link.index, **params)
        except NetlinkError as e:
            raise explain(change, e) from e
        self.changes.append(change)
        self._reread(link.name)  # later steps of this pass see the link as it now is

    def _cached(self, name: str) -> ln.Link:
        link = self.links.get(name)
        if link is None:
            raise NetworkUnavailable(f"{name} vanished while being configured")
        return link

    def _fdb(self, command: str, link: ln.Link, peer: str, change: str) -> None:
        try:
            self.ipr.fdb(command, ifindex=link.index, lladdr=ln.ZERO_MAC, dst=peer)
        except NetlinkError as e:
            raise explain(change, e) from e
        self.changes.append(change)

    def _reread(self, name: str) -> ln.Link:
        link = ln.get_link(self.ipr, name)
        if link is None:
            self.links.pop(name, None)
            raise NetworkUnavailable(f"{name} vanished while being configured")
        self.links[name] = link
        return link
