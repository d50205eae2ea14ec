"""Naming scheme of managed links, tap names and stable MACs (pure, no root)."""

from __future__ import annotations

import pytest

from tashi.nm.network.names import (
    bridge_name,
    managed_network_id,
    stable_mac,
    tap_name,
    vlan_name,
    vxlan_name,
)


def test_managed_names_round_trip_to_network_id() -> None:
    for make in (bridge_name, vxlan_name, vlan_name):
        assert managed_network_id(make(42)) == 42
    assert bridge_name(11) == "tbr11"
    assert vxlan_name(11) == "tvx11"
    assert vlan_name(11) == "tvl11"


@pytest.mark.parametrize("name", ["eth0", "br11", "eth0.11", "tbr", "tbr1a", "tt5n0", "xtbr1"])
def test_other_links_are_not_managed(name: str) -> None:
    assert managed_network_id(name) is None


def test_names_fit_the_kernel_limit() -> None:
    assert len(bridge_name(999_999_999_999)) == 15
    with pytest.raises(ValueError):
        bridge_name(10**12)
    with pytest.raises(ValueError):
        bridge_name(-1)
    assert tap_name(4_294_967_295, 31) == "tt4294967295n31"
    with pytest.raises(ValueError):
        tap_name(10**11, 0)


def test_stable_mac_is_deterministic_unicast_and_local() -> None:
    mac = stable_mac(1234, 1)
    assert mac == stable_mac(1234, 1)
    assert mac == "56:00:00:04:d2:01"
    first = int(mac.split(":")[0], 16)
    assert first & 0x01 == 0, "multicast bit must be clear"
    assert first & 0x02, "locally administered bit must be set"


def test_stable_macs_differ_per_instance_and_nic() -> None:
    macs = {stable_mac(i, n) for i in range(1, 200) for n in range(4)}
    assert len(macs) == 199 * 4
    with pytest.raises(ValueError):
        stable_mac(1, 256)
