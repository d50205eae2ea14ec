"""The hook chain and the built-in IP allocator."""

from __future__ import annotations

import dataclasses

from tashi.scheduler.hooks import Hook, HookChain, NetworkInfo, PreCreate
from tashi.scheduler.ipam import IpAllocator
from tashi.scheduler.model import HostView, VmSpec

HOST = HostView(id=1, name="h1", cores=8, memory_mib=8192)


def nic_vm(vid: int, *nets: int, ips: tuple[str, ...] | None = None) -> VmSpec:
    return VmSpec(id=vid, networks=tuple(nets), nic_ips=ips or tuple("" for _ in nets))


def test_addresses_come_from_the_range_skipping_network_gateway_broadcast() -> None:
    ipam = IpAllocator()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/29"))  # .0 net, .1 gateway, .7 broadcast
    got = [ipam.pre_create(nic_vm(i, 11), HOST).nic_ips[0] for i in range(1, 6)]
    assert got == [f"10.11.0.{i}" for i in range(2, 7)]
    full = ipam.pre_create(nic_vm(9, 11), HOST)
    assert full.refusal == "network 11 (10.11.0.0/29) has no free address"
    assert ipam.free_addresses(11) == 0


def test_destroy_gives_the_address_back() -> None:
    ipam = IpAllocator()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/30"))  # one usable: .2
    first = ipam.pre_create(nic_vm(1, 11), HOST)
    assert first.nic_ips == ("10.11.0.2",)
    ipam.observe(nic_vm(1, 11, ips=first.nic_ips))  # the CM accepted: it carries it
    assert ipam.pre_create(nic_vm(2, 11), HOST).refusal
    ipam.post_destroy(nic_vm(1, 11, ips=first.nic_ips))
    assert ipam.pre_create(nic_vm(2, 11), HOST).nic_ips == ("10.11.0.2",)


def test_cancel_returns_an_address_the_cm_never_took() -> None:
    ipam = IpAllocator()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/30"))
    vm = nic_vm(1, 11)
    ipam.pre_create(vm, HOST)
    ipam.cancel(vm)
    assert ipam.free_addresses(11) == 1
    assert ipam.holder(11, "10.11.0.2") is None


def test_nics_with_addresses_or_without_a_range_are_left_alone() -> None:
    ipam = IpAllocator()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/24"))
    ipam.network(NetworkInfo(12, "plain"))
    vm = nic_vm(1, 11, 12, 11, ips=("10.11.0.50", "", ""))
    ipam.observe(vm)
    answer = ipam.pre_create(vm, HOST)
    assert answer.nic_ips == ("", "", "10.11.0.2")


def test_rebuild_from_instances_after_a_relist() -> None:
    ipam = IpAllocator()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/29"))
    ipam.pre_create(nic_vm(1, 11), HOST)
    ipam.reset()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/29"))
    for i, ip in enumerate(["10.11.0.2", "10.11.0.3", "10.11.0.5"], start=1):
        ipam.observe(nic_vm(i, 11, ips=(ip,)))
    assert ipam.holder(11, "10.11.0.5") == 3
    got = {ipam.pre_create(nic_vm(i, 11), HOST).nic_ips[0] for i in (7, 8)}
    assert got == {"10.11.0.4", "10.11.0.6"}
    assert ipam.pre_create(nic_vm(9, 11), HOST).refusal


def test_ipv6_ranges() -> None:
    ipam = IpAllocator()
    ipam.network(NetworkInfo(5, "v6", "fd00::/126"))
    assert ipam.pre_create(nic_vm(1, 5), HOST).nic_ips == ("fd00::2",)
    assert ipam.pre_create(nic_vm(2, 5), HOST).nic_ips == ("fd00::3",)
    assert ipam.pre_create(nic_vm(3, 5), HOST).refusal


def test_a_changed_address_releases_the_old_one() -> None:
    ipam = IpAllocator()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/24"))
    ipam.observe(nic_vm(1, 11, ips=("10.11.0.9",)))
    ipam.observe(nic_vm(1, 11, ips=("10.11.0.10",)))
    assert ipam.holder(11, "10.11.0.9") is None and ipam.holder(11, "10.11.0.10") == 1


class Veto(Hook):
    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def pre_create(self, vm: VmSpec, host: HostView) -> PreCreate:
        return PreCreate(refusal="dns is down")


def test_a_veto_cancels_what_earlier_hooks_prepared() -> None:
    ipam = IpAllocator()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/30"))
    chain = HookChain([ipam, Veto()])
    answer = chain.pre_create(nic_vm(1, 11), HOST)
    assert answer == PreCreate(refusal="dns is down")
    assert ipam.free_addresses(11) == 1


def test_chain_merges_addresses_by_nic() -> None:
    class Fixed(Hook):
        def pre_create(self, vm: VmSpec, host: HostView) -> PreCreate:
            return PreCreate(nic_ips=("", "192.0.2.7"))

    ipam = IpAllocator()
    ipam.network(NetworkInfo(11, "lan", "10.11.0.0/24"))
    chain = HookChain([ipam, Fixed()])
    answer = chain.pre_create(dataclasses.replace(nic_vm(1, 11, 12)), HOST)
    assert answer.nic_ips == ("10.11.0.2", "192.0.2.7")
