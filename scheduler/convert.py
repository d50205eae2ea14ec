"""The one place where the cluster manager's protobuf resources become policy values."""

from __future__ import annotations

from tashi.scheduler.hints import parse_hints
from tashi.scheduler.model import HostState, HostView, VmSpec, VmState
from tashi.v1 import resources_pb2 as pb

_HOST_STATES = {
    pb.HOST_STATE_NORMAL: HostState.NORMAL,
    pb.HOST_STATE_DRAINED: HostState.DRAINED,
    pb.HOST_STATE_VERSION_MISMATCH: HostState.VERSION_MISMATCH,
}

# States in which an instance holds no host (cm/lifecycle.py HOSTLESS).
_HOSTLESS = frozenset({pb.INSTANCE_STATE_PENDING, pb.INSTANCE_STATE_HELD,
                       pb.INSTANCE_STATE_SUSPENDED})
_MIGRATING = frozenset({pb.INSTANCE_STATE_MIGRATE_PREP, pb.INSTANCE_STATE_MIGRATE_TRANS})

_VM_STATES = {
    pb.INSTANCE_STATE_PENDING: VmState.PENDING,
    pb.INSTANCE_STATE_HELD: VmState.HELD,
    pb.INSTANCE_STATE_ACTIVATING: VmState.ACTIVATING,
}


def host_view(host: pb.Host) -> HostView:
    """Capacity and state only: the view derives usage from the instances it holds."""
    return HostView(
        id=host.id,
        name=host.name,
        up=host.up,
        state=_HOST_STATES.get(host.state, HostState.UNKNOWN),
        cores=host.cores,
        memory_mib=host.memory_mib,
        reserved_for=frozenset(host.reserved_for),
        reports_networks=len(host.networks) > 0,
        ready_networks=frozenset(n.network_id for n in host.networks if n.ready),
        network_problems=tuple((n.network_id, n.reason) for n in host.networks if not n.ready),
    )


def charged_hosts(inst: pb.Instance) -> tuple[int, ...]:
    """Hosts whose capacity the CM counts this instance against."""
    hosts: tuple[int, ...] = ()
    if inst.host_id and inst.state not in _HOSTLESS:
        hosts = (inst.host_id,)
    target = inst.hints.get("__migrate_target", "")
    if target.isdigit() and inst.state in _MIGRATING and int(target) not in hosts:
        hosts += (int(target),)
    return hosts


def vm_spec(inst: pb.Instance) -> VmSpec:
    hints = dict(inst.hints)
    return VmSpec(
        id=inst.id,
        name=inst.name,
        owner=inst.owner,
        cores=inst.cores,
        memory_mib=inst.memory_mib,
        state=_VM_STATES.get(inst.state, VmState.OTHER),
        host_id=inst.host_id,
        charged_hosts=charged_hosts(inst),
        networks=tuple(n.network_id for n in inst.nics),
        nic_ips=tuple(n.ip for n in inst.nics),
        disks=tuple(d.uri for d in inst.disks),
        persistent_disks=tuple(d.uri for d in inst.disks if d.persistent),
        group_name=inst.group_name,
        hints=parse_hints(hints, inst.group_name),
        state_reason=inst.state_reason,
    )
