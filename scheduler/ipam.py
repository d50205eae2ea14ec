"""Built-in IP address allocator: the first pre-create/post-destroy hook.

A NIC without an address on a network that has a `cidr` gets the next free
address of that range when its VM is placed; the address comes back when
the instance is destroyed.  The network address, the IPv4 broadcast
address and the first host address (by convention the gateway) are never
handed out.  The allocator keeps no file: after a relist it rebuilds from
the addresses the instances carry.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from tashi.scheduler.hooks import Hook, NetworkInfo, PreCreate
from tashi.scheduler.model import HostView, VmSpec

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class _Pool:
    net: IpNetwork
    first: int
    last: int
    # address (as int) -> instance id
    used: dict[int, int] = field(default_factory=dict)
    cursor: int = 0
    # How many used addresses lie in first..last (users may set others, e.g. the gateway).
    allocatable_used: int = 0

    @classmethod
    def of(cls, cidr: str) -> _Pool:
        net = ipaddress.ip_network(cidr, strict=False)
        base = int(net.network_address)
        last = int(net.broadcast_address)
        if net.version == 4 and net.prefixlen < 31:
            last -= 1
        first = base + 2 if net.num_addresses > 2 else base
        return cls(net, first, last, cursor=first)

    @property
    def size(self) -> int:
        return max(0, self.last - self.first + 1)

    def contains(self, addr: int) -> bool:
        return int(self.net.network_address) <= addr <= int(self.net.broadcast_address)

    def mark(self, addr: int, vm_id: int) -> None:
        if addr not in self.used and self.first <= addr <= self.last:
            self.allocatable_used += 1
        self.used[addr] = vm_id

    def unmark(self, addr: int) -> None:
        if self.used.pop(addr, None) is not None and self.first <= addr <= self.last:
            self.allocatable_used -= 1

    def take(self, vm_id: int) -> str | None:
        if self.allocatable_used >= self.size:
            return None
        addr = self.cursor
        while addr in self.used:
            addr = addr + 1 if addr < self.last else self.first
        self.mark(addr, vm_id)
        self.cursor = addr + 1 if addr < self.last else self.first
        return str(ipaddress.ip_address(addr))

    def index_of(self, ip: str) -> int | None:
        try:
            addr = int(ipaddress.ip_address(ip))
        except ValueError:
            return None
        return addr if self.contains(addr) else None


class IpAllocator(Hook):
    def __init__(self) -> None:
        self._pools: dict[int, _Pool] = {}
        # instance id -> [(network id, address int)] it holds
        self._held: dict[int, list[tuple[int, int]]] = {}

    # -- state ------------------------------------------------------------------
    def reset(self) -> None:
        self._pools.clear()
        self._held.clear()

    def network(self, net: NetworkInfo) -> None:
        old = self._pools.get(net.id)
        if old is not None and net.cidr and ipaddress.ip_network(net.cidr, strict=False) == old.net:
            return
        if not net.cidr:
            self._pools.pop(net.id, None)
            return
        try:
            pool = _Pool.of(net.cidr)
        except ValueError:
            log.warning("network %d: cidr %r is not a network; no addresses allocated",
                        net.id, net.cidr)
            self._pools.pop(net.id, None)
            return
        for vm_id, held in self._held.items():
            for net_id, addr in held:
                if net_id == net.id and pool.contains(addr):
                    pool.mark(addr, vm_id)
        self._pools[net.id] = pool

    def network_deleted(self, net_id: int) -> None:
        self._pools.pop(net_id, None)

    def free_addresses(self, net_id: int) -> int:
        pool = self._pools.get(net_id)
        return pool.size - pool.allocatable_used if pool else 0

    def holder(self, net_id: int, ip: str) -> int | None:
        pool = self._pools.get(net_id)
        addr = pool.index_of(ip) if pool else None
        return pool.used.get(addr) if pool and addr is not None else None

    # -- hook -------------------------------------------------------------------
    def observe(self, vm: VmSpec) -> None:
        """Record the addresses an instance carries (given by us, another scheduler
        or the user); addresses it no longer carries go back to the pool."""
        now: list[tuple[int, int]] = []
        for net_id, ip in zip(vm.networks, vm.nic_ips, strict=False):
            pool = self._pools.get(net_id)
            addr = pool.index_of(ip) if pool and ip else None
            if pool is None or addr is None:
                continue
            other = pool.used.get(addr)
            if other is not None and other != vm.id:
                log.warning("address %s on network %d is on instances %d and %d",
                            ip, net_id, other, vm.id)
            pool.mark(addr, vm.id)
            now.append((net_id, addr))
        self._release(vm.id, keep=set(now))
        if now:
            self._held[vm.id] = now

    def pre_create(self, vm: VmSpec, host: HostView) -> PreCreate:
        ips: list[str] = []
        taken: list[tuple[int, int]] = []
        for i, net_id in enumerate(vm.networks):
            current = vm.nic_ips[i] if i < len(vm.nic_ips) else ""
            pool = self._pools.get(net_id)
            if current or pool is None:
                ips.append("")
                continue
            ip = pool.take(vm.id)
            if ip is None:
                for n, addr in taken:
                    self._pools[n].unmark(addr)
                return PreCreate(refusal=f"network {net_id} ({pool.net}) has no free address")
            taken.append((net_id, int(ipaddress.ip_address(ip))))
            ips.append(ip)
        if taken:
            self._held.setdefault(vm.id, []).extend(taken)
        return PreCreate(nic_ips=tuple(ips) if taken else ())

    def cancel(self, vm: VmSpec) -> None:
        """Give back what `pre_create` took: the addresses the instance does not carry."""
        carried = {(n, ip) for n, ip in zip(vm.networks, vm.nic_ips, strict=False) if ip}
        keep = set()
        for net_id, addr in self._held.get(vm.id, []):
            if (net_id, str(ipaddress.ip_address(addr))) in carried:
                keep.add((net_id, addr))
        self._release(vm.id, keep)

    def post_destroy(self, vm: VmSpec) -> None:
        self._release(vm.id, keep=set())

    def _release(self, vm_id: int, keep: set[tuple[int, int]]) -> None:
        held = self._held.pop(vm_id, [])
        for net_id, addr in held:
            if (net_id, addr) in keep:
                continue
            pool = self._pools.get(net_id)
            if pool is not None and pool.used.get(addr) == vm_id:
                pool.unmark(addr)
        if keep:
            self._held[vm_id] = sorted(keep)
