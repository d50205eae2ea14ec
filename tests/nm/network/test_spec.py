"""NetworkSpec from the wire type and its validation (pure, no root)."""

from __future__ import annotations

from tashi.nm.network.spec import Kind, NetworkSpec
from tashi.v1 import resources_pb2 as pb


def test_from_proto_applies_defaults() -> None:
    spec = NetworkSpec.from_proto(pb.Network(
        id=7, name="data", kind=pb.NETWORK_KIND_VXLAN, vni=70, peers=["10.0.0.1", " 10.0.0.2 "],
    ))
    assert spec == NetworkSpec(7, "data", Kind.VXLAN, mtu=1500, vni=70,
                               peers=("10.0.0.1", "10.0.0.2"), port=4789)
    assert spec.problem() == ""
    assert spec.underlay_mtu() == 1550


def test_vlan_and_flat_need_no_underlay_headroom() -> None:
    vlan = NetworkSpec.from_proto(pb.Network(id=1, kind=pb.NETWORK_KIND_VLAN, vlan_id=11, mtu=9000))
    flat = NetworkSpec.from_proto(pb.Network(id=2, kind=pb.NETWORK_KIND_FLAT))
    assert (vlan.problem(), vlan.underlay_mtu()) == ("", 9000)
    assert (flat.problem(), flat.underlay_mtu()) == ("", 1500)


def test_problems_say_what_is_wrong() -> None:
    def problem(**kw: object) -> str:
        return NetworkSpec.from_proto(pb.Network(id=1, **kw)).problem()  # type: ignore[arg-type]

    assert "kind is not set" in problem()
    assert "VLAN id 0" in problem(kind=pb.NETWORK_KIND_VLAN)
    assert "VLAN id 4095" in problem(kind=pb.NETWORK_KIND_VLAN, vlan_id=4095)
    assert "MTU 40" in problem(kind=pb.NETWORK_KIND_FLAT, mtu=40)
    vx = pb.NETWORK_KIND_VXLAN
    assert "VNI 0" in problem(kind=vx, peers=["10.0.0.1"])
    assert "group or a peer list" in problem(kind=vx, vni=5)
    assert "not both" in problem(kind=vx, vni=5, group="239.1.1.1", peers=["10.0.0.1"])
    assert "not a multicast" in problem(kind=vx, vni=5, group="10.0.0.1")
    assert "not an IP address" in problem(kind=vx, vni=5, peers=["host-b"])
    assert "IPv6" in problem(kind=vx, vni=5, peers=["2001:db8::1"])
