"""Host network convergence with pyroute2, inside namespaces the tests create.

Two "hosts" are two namespaces joined by a veth underlay; each converges the
same networks as a node manager would, then traffic crosses between their
bridges.  Nothing here touches the machine's own interfaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tashi.nm.network import HostNetworking, Kind, NetworkSpec
from tests.netns import Namespace, kernel_has_8021q, namespace, two_hosts

pytestmark = pytest.mark.system

PEERS = ("192.0.2.1", "192.0.2.2")
VX1 = NetworkSpec(1, "one", Kind.VXLAN, mtu=9000, vni=101, peers=PEERS)
VX2 = NetworkSpec(2, "two", Kind.VXLAN, mtu=9000, vni=102, group="239.1.1.2")
VLAN_UNSUPPORTED = "kernel has no 802.1Q VLAN support (module 8021q not loaded)"


def converge(ns: Namespace, networks: list[NetworkSpec], uplink: str = "up0") -> Any:
    return HostNetworking(uplink, ns.name).converge(networks)


def shape(ns: Namespace) -> dict[str, Any]:
    """Everything a pass could change: links with index, MTU, master, state, kind data; FDB."""
    out: dict[str, Any] = {}
    for name, link in ns.links().items():
        info = link.get("linkinfo", {})
        data = {k: v for k, v in info.get("info_data", {}).items() if not k.endswith("_timer")}
        out[name] = (link["ifindex"], link["mtu"], link.get("master"), "UP" in link["flags"],
                     info.get("info_kind"), json.dumps(data, sort_keys=True),
                     link.get("ifalias"))
        if name.startswith("tvx"):
            fdb = json.loads(ns.run("bridge", "-j", "fdb", "show", "dev", name).stdout)
            out[name + " fdb"] = sorted(e["mac"] + " " + e.get("dst", "")
                                        for e in fdb if "self" in e.get("flags", []))
    return out


@pytest.fixture()
def hosts() -> Iterator[tuple[Namespace, Namespace]]:
    with two_hosts() as pair:
        yield pair


@pytest.fixture()
def host() -> Iterator[Namespace]:
    """One host whose uplink `up0` is a veth with its peer `wire0` in the same namespace."""
    with namespace("h") as ns:
        ns.ip("link", "add", "up0", "type", "veth", "peer", "name", "wire0")
        ns.ip("addr", "add", "192.0.2.1/24", "dev", "up0")
        ns.ip("link", "set", "up0", "up")
        ns.ip("link", "set", "wire0", "up")
        yield ns


def test_vxlan_bridges_reach_each_other_isolated_with_mtu_9000(hosts: Any) -> None:
    a, b = hosts
    for ns in (a, b):
        result = converge(ns, [VX1, VX2])
        assert [(s.network_id, s.ready, s.bridge) for s in result.statuses] == [
            (1, True, "tbr1"), (2, True, "tbr2")]
    for i, ns in enumerate((a, b), start=1):
        ns.ip("addr", "add", f"10.61.0.{i}/24", "dev", "tbr1")
        ns.ip("addr", "add", f"10.62.0.{i}/24", "dev", "tbr2")
    # Cross-wired pair: A's network 1 and B's network 2 share a subnet, so
    # only a frame leaking from VNI 101 into VNI 102 could get an answer.
    a.ip("addr", "add", "10.63.0.1/24", "dev", "tbr1")
    b.ip("addr", "add", "10.63.0.2/24", "dev", "tbr2")

    assert a.ping_soon("10.61.0.2"), "network 1 (unicast peers) does not cross the underlay"
    assert a.ping_soon("10.62.0.2"), "network 2 (multicast group) does not cross the underlay"
    for target in ("10.61.0.2", "10.62.0.2"):
        assert a.ping(target, size=8972, dont_fragment=True), f"9000-byte frame to {target}"
    assert not a.ping("10.63.0.2", count=2, wait=1), "VXLAN networks 1 and 2 are not isolated"

    links = a.links()
    assert links["up0"]["mtu"] == 9050, "underlay MTU must carry 9000 + VXLAN overhead"
    for name in ("tbr1", "tvx1", "tbr2", "tvx2"):
        assert links[name]["mtu"] == 9000, name
    br = links["tbr1"]["linkinfo"]["info_data"]
    assert (br["forward_delay"], br["hello_time"], br["stp_state"]) == (0, 100, 0)
    assert links["tvx1"]["master"] == "tbr1"


def test_converge_twice_changes_nothing(host: Namespace) -> None:
    first = converge(host, [VX1, VX2])
    assert first.changes and all(s.ready for s in first.statuses)
    before = shape(host)
    second = converge(host, [VX1, VX2])
    assert second.changes == ()
    assert shape(host) == before


def test_half_made_links_are_repaired(host: Namespace) -> None:
    converge(host, [VX1, VX2])
    healthy = shape(host)
    # What a crash or a careless operator leaves behind:
    host.ip("link", "del", "tvx1")                                 # lower device gone
    host.ip("link", "set", "tbr2", "down")                         # bridge down
    host.ip("link", "set", "tvx2", "nomaster")                     # port detached
    host.ip("link", "set", "tbr2", "type", "bridge", "forward_delay", "1500")
    host.ip("link", "set", "tvx2", "mtu", "1400")

    result = converge(host, [VX1, VX2])
    assert all(s.ready for s in result.statuses)
    assert "created VXLAN 101 device tvx1 on up0" in result.changes
    repaired = shape(host)
    assert repaired.keys() == healthy.keys()
    # tvx1 is new (new index); tbr1 took its new port's MAC as bridge id.
    assert repaired["tvx1"][1:] == healthy["tvx1"][1:]
    assert repaired["tbr1"][:5] == healthy["tbr1"][:5]
    for name in healthy.keys() - {"tvx1", "tbr1"}:
        assert repaired[name] == healthy[name], name
    assert converge(host, [VX1, VX2]).changes == ()


def test_changed_parameters_rebuild_the_device(host: Namespace) -> None:
    converge(host, [VX1])
    host.ip("link", "del", "tvx1")
    host.ip("link", "add", "tvx1", "type", "vxlan", "id", "999", "dstport", "4789", "dev", "up0")
    result = converge(host, [VX1])
    assert "deleted vxlan tvx1 (parameters changed)" in result.changes
    assert host.links()["tvx1"]["linkinfo"]["info_data"]["id"] == 101
    moved = NetworkSpec(1, "one", Kind.VXLAN, mtu=9000, vni=101, peers=("192.0.2.9",))
    result = converge(host, [moved])
    assert result.changes == ("added VXLAN peer 192.0.2.9 to tvx1",
                              "removed VXLAN peer 192.0.2.2 from tvx1")


def test_removed_networks_are_torn_down_and_nothing_else_is_touched(host: Namespace) -> None:
    host.ip("link", "add", "keep0", "type", "veth", "peer", "name", "keep1")
    host.ip("addr", "add", "198.51.100.7/24", "dev", "keep0")
    untouched = {name: v for name, v in shape(host).items() if name != "up0"}  # MTU is raised
    uplink_addrs = host.addrs("up0")
    flat = NetworkSpec(3, "flat", Kind.FLAT)
    result = converge(host, [VX1, VX2, flat])
    assert result.status(3).ready is False
    assert "uplink up0 carries addresses (192.0.2.1)" in result.status(3).reason
    assert host.links()["up0"].get("master") is None

    result = converge(host, [VX2])
    assert "deleted vxlan tvx1 (no longer wanted)" in result.changes
    assert "deleted bridge tbr1 (no longer wanted)" in result.changes
    assert {"tbr1", "tvx1", "tbr3"}.isdisjoint(host.links())
    converge(host, [])
    after = shape(host)
    assert not [n for n in after if n.startswith(("tbr", "tvx", "tvl"))]
    assert {n: after[n] for n in untouched} == untouched
    assert "192.0.2.1/24" in uplink_addrs
    assert host.addrs("up0") == uplink_addrs
    assert host.addrs("keep0") == ["198.51.100.7/24"]


def test_missing_uplink_is_reported(host: Namespace) -> None:
    result = HostNetworking("eth9", host.name).converge([VX1])
    assert result.status(1).ready is False
    assert result.status(1).reason == "uplink eth9 not found"


def test_flat_network_bridges_the_uplink(hosts: Any) -> None:
    a, b = hosts
    flat = NetworkSpec(5, "lan", Kind.FLAT, mtu=9000)
    for ns in (a, b):
        ns.ip("addr", "flush", "dev", "up0")
        result = converge(ns, [flat, NetworkSpec(6, "lan2", Kind.FLAT)])
        assert result.status(5).ready and result.status(5).bridge == "tbr5"
        assert result.status(6).reason == "uplink up0 is already a port of bridge tbr5"
    for i, ns in enumerate((a, b), start=1):
        ns.ip("addr", "add", f"10.65.0.{i}/24", "dev", "tbr5")
    assert a.ping_soon("10.65.0.2")
    assert a.ping("10.65.0.2", size=8972, dont_fragment=True)
    converge(a, [])
    assert a.links()["up0"].get("master") is None and a.links()["up0"]["mtu"] == 9000


def test_bridged_uplink_serves_a_flat_network_as_is(host: Namespace) -> None:
    host.ip("link", "add", "br0", "type", "bridge")
    host.ip("link", "set", "br0", "up")
    result = converge(host, [NetworkSpec(4, "lan", Kind.FLAT)], uplink="br0")
    assert (result.status(4).ready, result.status(4).bridge) == (True, "br0")
    assert "tbr4" not in host.links()


def test_tap_joins_the_network_bridge(host: Namespace) -> None:
    net = HostNetworking("up0", host.name)
    net.converge([VX1])
    assert net.bridge_for(1) == "tbr1"
    host.ip("tuntap", "add", "dev", "tt7n0", "mode", "tap")
    net.attach_tap("tt7n0", "tbr1", 9000)
    tap = host.links()["tt7n0"]
    assert (tap["master"], tap["mtu"], "UP" in tap["flags"]) == ("tbr1", 9000, True)
    before = shape(host)
    net.attach_tap("tt7n0", "tbr1", 9000)
    assert net.converge([VX1]).changes == ()
    assert shape(host) == before


def test_vlan_unsupported_is_reported(host: Namespace) -> None:
    if kernel_has_8021q():
        pytest.skip("this kernel has 802.1Q (test_vlan_bridges_reach_each_other covers it)")
    result = converge(host, [NetworkSpec(11, "vlan11", Kind.VLAN, vlan_id=11, mtu=9000), VX1])
    assert result.status(11).ready is False
    assert result.status(11).reason == VLAN_UNSUPPORTED
    assert result.status(1).ready, "one unavailable network must not stop the others"
    assert {"tvl11", "tbr11"}.isdisjoint(host.links())


def test_vlan_bridges_reach_each_other(hosts: Any) -> None:
    if not kernel_has_8021q():
        pytest.skip("kernel has no 802.1Q (test_vlan_unsupported_is_reported covers it)")
    a, b = hosts
    vlan = NetworkSpec(11, "vlan11", Kind.VLAN, vlan_id=11, mtu=9000)
    other = NetworkSpec(12, "vlan12", Kind.VLAN, vlan_id=12, mtu=9000)
    for ns in (a, b):
        result = converge(ns, [vlan, other])
        assert result.status(11).ready and result.status(11).bridge == "tbr11"
        assert converge(ns, [vlan, other]).changes == ()
    a.ip("addr", "add", "10.66.0.1/24", "dev", "tbr11")
    b.ip("addr", "add", "10.66.0.2/24", "dev", "tbr11")
    a.ip("addr", "add", "10.67.0.1/24", "dev", "tbr11")
    b.ip("addr", "add", "10.67.0.2/24", "dev", "tbr12")
    assert a.ping_soon("10.66.0.2")
    assert a.ping("10.66.0.2", size=8972, dont_fragment=True)
    assert not a.ping("10.67.0.2", count=2, wait=1), "VLANs 11 and 12 are not isolated"
    link = a.links()["tvl11"]
    assert (link["link"], link["linkinfo"]["info_data"]["id"]) == ("up0", 11)
