"""The one place where the cluster manager's protobuf resources become policy values.

An instance's size, disks, hints and group come from its spec (what the owner
asked for); its state, host, charged hosts and addresses from its status
(what the cluster manager decided and observed).
"""

from __future__ import annotations

from tashi.scheduler.hints import parse_hints
from tashi.scheduler.model import HostState, HostView, VmSpec, VmState
from tashi.v1 import resources_pb2 as pb

_HOST_STATES = {
    pb.HOST_STATE_NORMAL: HostState.NORMAL,
    pb.HOST_STATE_DRAINED: HostState.DRAINED,
    pb.HOST_STATE_VERSION_MISMATCH: HostState.VERSION_MISMATCH,
}

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


def vm_spec(inst: pb.Instance) -> VmSpec:
    spec, status = inst.spec, inst.status
    return VmSpec(
        id=inst.id,
        name=inst.name,
        owner=inst.owner,
        cores=spec.cores,
        memory_mib=spec.memory_mib,
        state=_VM_STATES.get(status.state, VmState.OTHER),
        host_id=status.host_id,
        # The CM computes these with runtime/fit.py; the scheduler takes them as given.
        charged_hosts=tuple(status.charged_host_ids),
        # The NICs in effect: the default network resolved, addresses allocated.
        networks=tuple(n.network_id for n in status.nics),
        nic_ips=tuple(n.ip for n in status.nics),
        disks=tuple(d.uri for d in spec.disks),
        persistent_disks=tuple(d.uri for d in spec.disks if d.persistent),
        group_name=spec.group_name,
        hints=parse_hints(dict(spec.hints), spec.group_name),
        state_reason=status.reason,
        resume_host_id=status.suspend_host_id if status.suspend_image else 0,
    )
