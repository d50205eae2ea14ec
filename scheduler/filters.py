"""Feasibility checks: can this host take this VM, and if not, why.

Each check is one small class with one predicate (Nomad's feasibility
checkers, Nova's filters).  A check answers None when the host passes, or a
`Failure` whose `key` groups hosts failing the same way and whose `detail`
says it for people (the Held reason is built from them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tashi.runtime import fit
from tashi.scheduler.model import HostState, HostView, VmSpec


@dataclass(frozen=True, slots=True)
class Failure:
    # Short phrase shared by every host failing this way ("down", "not enough free cores").
    key: str
    # The same for one host, with numbers.
    detail: str


class PlacementContext(Protocol):
    """Facts about other VMs that some checks need (answered by the cluster view)."""

    def group_count_on(self, group: tuple[str, str], host_id: int) -> int:
        """How many VMs of an anti-affinity group are assigned to a host."""

    def avoid_reason(self, vm_id: int, host_id: int) -> str | None:
        """Why the VM should not go back to a host for now (its start failed there)."""

    def disk_holder(self, uri: str, vm_id: int) -> int | None:
        """Another instance on some host that uses this disk image, if any."""


class HostCheck(Protocol):
    def check(self, host: HostView, vm: VmSpec, ctx: PlacementContext) -> Failure | None: ...


class HostUp:
    def check(self, host: HostView, vm: VmSpec, ctx: PlacementContext) -> Failure | None:
        if host.up:
            return None
        return Failure("down", "host is down")


class HostNormal:
    """Normal hosts take VMs; a drained one still takes back the VMs whose saved
    state it holds (a resume is not a new placement: the state cannot go elsewhere)."""

    def check(self, host: HostView, vm: VmSpec, ctx: PlacementContext) -> Failure | None:
        if host.state is HostState.NORMAL:
            return None
        if host.state is HostState.DRAINED and vm.resume_host_id == host.id:
            return None
        key = f"in state {host.state.value}"
        return Failure(key, f"host is {key}")


class Reservation:
    def check(self, host: HostView, vm: VmSpec, ctx: PlacementContext) -> Failure | None:
        if not host.reserved_for or vm.owner in host.reserved_for:
            return None
        return Failure("reserved for other users",
                       f"host is reserved for {', '.join(sorted(host.reserved_for))}")


class FreeCapacity:
    """Room for the VM's cores and memory, judged by the one fit rule
    (runtime/fit.py) that the CM's re-check and `tashi getSlots` use too."""

    _KEYS = {"cores": "not enough free cores", "memory": "not enough free memory"}

    def check(self, host: HostView, vm: VmSpec, ctx: PlacementContext) -> Failure | None:
        short = fit.shortfall(host.free_cores, host.free_memory_mib, vm.cores, vm.memory_mib)
        if short is None:
            return None
        if short.resource == "cores":
            detail = f"needs {short.needed} cores, {short.free} of {host.cores} free"
        else:
            detail = f"needs {short.needed} MiB, {short.free} of {host.memory_mib} MiB free"
        return Failure(self._KEYS[short.resource], detail)


class NetworksReady:
    """Every network the VM has a NIC on must be reported ready by the host's NM.
    A node manager that reports no network status at all is not held to it,
    as the CM does not (a host without managed networking)."""

    def check(self, host: HostView, vm: VmSpec, ctx: PlacementContext) -> Failure | None:
        if not host.reports_networks:
            return None
        for net in vm.networks:
            if net not in host.ready_networks:
                why = dict(host.network_problems).get(net, "not reported by the node manager")
                return Failure(f"network {net} not ready", f"network {net} not ready: {why}")
        return None


class AntiAffinity:
    def check(self, host: HostView, vm: VmSpec, ctx: PlacementContext) -> Failure | None:
        group = vm.anti_affinity_key
        if group is None or ctx.group_count_on(group, host.id) == 0:
            return None
        key = f"already holds a VM of anti-affinity group {group[1]}"
        return Failure(key, f"host {key}")


class RecentStartFailure:
    """A VM whose start failed on a host is not sent straight back there."""

    def check(self, host: HostView, vm: VmSpec, ctx: PlacementContext) -> Failure | None:
        why = ctx.avoid_reason(vm.id, host.id)
        if why is None:
            return None
        return Failure("start failed there recently", f"start failed there recently: {why}")


# The capacity index answers up/Normal/cores/memory for the candidates it
# yields; the placer still runs the whole chain on the host it picks.
HOST_CHECKS: Sequence[HostCheck] = (
    HostUp(), HostNormal(), Reservation(), FreeCapacity(),
    NetworksReady(), AntiAffinity(), RecentStartFailure(),
)


def first_failure(host: HostView, vm: VmSpec, ctx: PlacementContext,
                  checks: Sequence[HostCheck] = HOST_CHECKS) -> Failure | None:
    for chk in checks:
        failure = chk.check(host, vm, ctx)
        if failure is not None:
            return failure
    return None


def vm_failure(vm: VmSpec, ctx: PlacementContext) -> str | None:
    """Checks that do not depend on the host: a persistent disk is written in place,
    so it is blocked while any other instance on a host uses that image."""
    for uri in vm.persistent_disks:
        holder = ctx.disk_holder(uri, vm.id)
        if holder is not None:
            return f"persistent disk {uri} is in use by instance {holder}"
    return None
