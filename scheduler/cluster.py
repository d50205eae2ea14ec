"""The scheduler's own view of the cluster, kept current from the CM's events.

Host usage is derived from the instances assigned to each host (the CM's
rule: every instance with a host counts, whatever its state), so an
instance update alone moves capacity, with no need for the CM to send a
host event.  The view also answers the questions filters ask
(`PlacementContext`) and keeps the capacity index in step.

`capacity_epoch` grows whenever room may have appeared (a host came up or
grew, an instance left a host, a start-failure ban expired ...): Held VMs
are worth another try only after it moved.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator

from tashi.scheduler.index import CapacityIndex
from tashi.scheduler.model import HostView, VmSpec, VmState


class ClusterView:
    def __init__(self, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.index = CapacityIndex(rng)
        self.clock = clock
        self.capacity_epoch = 0
        # Hosts as the CM describes them (usage fields 0), and as the filters see
        # them, usage included, built when asked for after a change.
        self._hosts: dict[int, HostView] = {}
        self._views: dict[int, HostView] = {}
        self._names: dict[str, int] = {}
        self._unschedulable: set[int] = set()
        # host id -> [cores, memory, count] of the instances assigned to it.
        self._usage: dict[int, list[int]] = {}
        self._instances: dict[int, VmSpec] = {}
        self.pending: set[int] = set()
        self.held: set[int] = set()
        self._disks: dict[str, set[int]] = {}
        self._groups: dict[tuple[str, str], Counter[int]] = {}
        # vm id -> host id -> (until, reason)
        self._avoid: dict[int, dict[int, tuple[float, str]]] = {}

    # -- reading ----------------------------------------------------------------
    def host(self, host_id: int) -> HostView | None:
        view = self._views.get(host_id)
        if view is None:
            base = self._hosts.get(host_id)
            if base is None:
                return None
            usage = self._usage.get(host_id)
            view = base if usage is None else _with_usage(base, usage)
            self._views[host_id] = view
        return view

    def hosts(self) -> Iterator[HostView]:
        for host_id in list(self._hosts):
            view = self.host(host_id)
            if view is not None:
                yield view

    def host_by_ref(self, ref: str) -> HostView | None:
        """Tashi's targetHost names a host by name or by id."""
        host_id = self._names.get(ref)
        if host_id is None and ref.isdigit():
            host_id = int(ref)
        return self.host(host_id) if host_id is not None else None

    def unschedulable_hosts(self) -> Iterator[HostView]:
        for host_id in list(self._unschedulable):
            view = self.host(host_id)
            if view is not None:
                yield view

    def instance(self, vm_id: int) -> VmSpec | None:
        return self._instances.get(vm_id)

    def instances(self) -> Iterator[VmSpec]:
        return iter(self._instances.values())

    def __len__(self) -> int:
        return len(self._hosts)

    # -- PlacementContext ---------------------------------------------------------
    def group_count_on(self, group: tuple[str, str], host_id: int) -> int:
        members = self._groups.get(group)
        return members[host_id] if members else 0

    def avoid_reason(self, vm_id: int, host_id: int) -> str | None:
        entry = self._avoid.get(vm_id, {}).get(host_id)
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]

    def disk_holder(self, uri: str, vm_id: int) -> int | None:
        holders = self._disks.get(uri)
        if not holders:
            return None
        others = holders - {vm_id}
        return min(others) if others else None

    # -- hosts --------------------------------------------------------------------
    def upsert_host(self, host: HostView) -> None:
        """Take a host's capacity and state; usage fields are the view's own."""
        new = host
        if host.used_cores or host.used_memory_mib or host.instance_count:
            new = dataclasses.replace(host, used_cores=0, used_memory_mib=0, instance_count=0)
        old = self._hosts.get(host.id)
        if old is not None and old.name != new.name:
            self._names.pop(old.name, None)
        if old is not None and old == new:
            return
        if old is None or _more_room(old, new):
            self.capacity_epoch += 1
        self._hosts[host.id] = new
        self._names[new.name] = new.id
        self._reindex(host.id)

    def delete_host(self, host_id: int) -> None:
        old = self._hosts.pop(host_id, None)
        if old is None:
            return
        self._views.pop(host_id, None)
        self._names.pop(old.name, None)
        self._unschedulable.discard(host_id)
        self.index.remove(host_id)

    def _reindex(self, host_id: int) -> None:
        self._views.pop(host_id, None)
        host = self._hosts.get(host_id)
        if host is None:
            return
        if host.schedulable:
            self._unschedulable.discard(host_id)
            cores, memory, count = self._usage.get(host_id, (0, 0, 0))
            self.index.put(host_id, count, host.cores - cores, host.memory_mib - memory)
        else:
            self._unschedulable.add(host_id)
            self.index.remove(host_id)

    def _add_usage(self, host_id: int, vm: VmSpec, sign: int) -> None:
        usage = self._usage.setdefault(host_id, [0, 0, 0])
        usage[0] += sign * vm.cores
        usage[1] += sign * vm.memory_mib
        usage[2] += sign
        if usage[2] == 0:
            del self._usage[host_id]
        self._reindex(host_id)

    # -- instances ------------------------------------------------------------------
    def upsert_instance(self, vm: VmSpec, quiet: bool = False) -> VmSpec | None:
        """Apply an instance as it now is; answers what it was before.  `quiet`: the
        change gives back room the scheduler itself had only assumed taken, so Held
        VMs need no new try for it."""
        old = self._instances.get(vm.id)
        if old is not None:
            released = bool(set(old.charged_hosts) - set(vm.charged_hosts)) or \
                bool(old.host_id and not vm.host_id and old.disks)
            self._forget(old, released=released and not quiet)
        self._instances[vm.id] = vm
        if vm.state is VmState.PENDING:
            self.pending.add(vm.id)
        elif vm.state is VmState.HELD:
            self.held.add(vm.id)
        for host_id in vm.charged_hosts:
            self._add_usage(host_id, vm, +1)
        if vm.host_id:
            for uri in vm.disks:
                self._disks.setdefault(uri, set()).add(vm.id)
        group = vm.anti_affinity_key
        if group is not None and vm.charged_hosts:
            members = self._groups.setdefault(group, Counter())
            for host_id in vm.charged_hosts:
                members[host_id] += 1
        return old

    def delete_instance(self, vm_id: int) -> VmSpec | None:
        old = self._instances.pop(vm_id, None)
        if old is not None:
            self._forget(old, released=bool(old.charged_hosts or old.host_id))
        self._avoid.pop(vm_id, None)
        return old

    def _forget(self, vm: VmSpec, released: bool) -> None:
        self.pending.discard(vm.id)
        self.held.discard(vm.id)
        for host_id in vm.charged_hosts:
            self._add_usage(host_id, vm, -1)
        if vm.host_id:
            for uri in vm.disks:
                holders = self._disks.get(uri)
                if holders is not None:
                    holders.discard(vm.id)
                    if not holders:
                        del self._disks[uri]
        group = vm.anti_affinity_key
        if group is not None and vm.charged_hosts:
            members = self._groups[group]
            for host_id in vm.charged_hosts:
                members[host_id] -= 1
                if members[host_id] <= 0:
                    del members[host_id]
            if not members:
                del self._groups[group]
        if released:
            self.capacity_epoch += 1

    # -- start failures -------------------------------------------------------------------
    def avoid(self, vm_id: int, host_id: int, reason: str, seconds: float) -> None:
        self._avoid.setdefault(vm_id, {})[host_id] = (self.clock() + seconds, reason)

    def has_avoids(self, vm_id: int) -> bool:
        return vm_id in self._avoid

    def copy_avoids(self, other: ClusterView) -> None:
        """Keep start-failure bans across a relist."""
        self._avoid = {vm: dict(bans) for vm, bans in other._avoid.items()}

    def next_avoid_expiry(self) -> float | None:
        """When the earliest ban ends: Held VMs get another chance then."""
        ends = [until for bans in self._avoid.values() for until, _ in bans.values()]
        return min(ends) if ends else None

    def expire_avoids(self) -> None:
        now = self.clock()
        expired = False
        for vm_id in list(self._avoid):
            bans = self._avoid[vm_id]
            for host_id in [h for h, (until, _) in bans.items() if until <= now]:
                del bans[host_id]
                expired = True
            if not bans:
                del self._avoid[vm_id]
        if expired:
            self.capacity_epoch += 1


def _with_usage(host: HostView, usage: list[int]) -> HostView:
    return HostView(
        id=host.id, name=host.name, up=host.up, state=host.state, cores=host.cores,
        memory_mib=host.memory_mib, used_cores=usage[0], used_memory_mib=usage[1],
        instance_count=usage[2], reserved_for=host.reserved_for,
        reports_networks=host.reports_networks, ready_networks=host.ready_networks,
        network_problems=host.network_problems)


def _more_room(old: HostView, new: HostView) -> bool:
    """Could a VM that fitted nowhere fit now because of this host change?"""
    return (
        (new.schedulable and not old.schedulable)
        or new.cores > old.cores
        or new.memory_mib > old.memory_mib
        or (bool(old.reserved_for) and new.reserved_for != old.reserved_for)
        or not new.ready_networks <= old.ready_networks
    )
