"""Protobuf <-> the node manager's plain values, in one place."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from tashi.nm.model import DiskSpec, NicSpec, Observation, VmInfo, VmSpec, VmStats
from tashi.runtime.names import as_instance_state
from tashi.v1 import node_manager_pb2 as nm
from tashi.v1 import node_registry_pb2 as reg
from tashi.v1 import resources_pb2 as pb


def spec_from_instance(inst: pb.Instance, bridges: dict[int, tuple[str, int]] | None = None
                       ) -> VmSpec:
    """The domain's NICs are the ones in effect (`status.nics`, one per spec NIC,
    same order); `bridges` maps network id -> (bridge, mtu) as the host's
    plumbing set them up."""
    bridges = bridges or {}
    spec, status = inst.spec, inst.status
    return VmSpec(
        instance_id=inst.id, name=inst.name, owner=inst.owner, cores=spec.cores,
        memory_mib=spec.memory_mib,
        disks=tuple(DiskSpec(d.uri, d.persistent, d.format) for d in spec.disks),
        nics=tuple(NicSpec(network_id=n.network_id, mac=n.mac, ip=n.ip,
                           bridge=bridges.get(n.network_id, ("", 0))[0],
                           mtu=bridges.get(n.network_id, ("", 0))[1]) for n in status.nics),
        hints=dict(spec.hints),
        asked_nics=tuple(NicSpec(network_id=n.network_id, mac=n.mac, ip=n.ip)
                         for n in spec.nics),
        group_name=spec.group_name)


def _nics(nics: tuple[NicSpec, ...]) -> list[pb.Nic]:
    return [pb.Nic(network_id=n.network_id, mac=n.mac, ip=n.ip) for n in nics]


def instance_from_spec(spec: VmSpec, vm_id: str = "", state: int = 0) -> pb.Instance:
    """What this host knows of an instance, in the CM's shape: the owner's spec as
    the VM was started with it, the NICs in effect (with any learned address),
    state and domain name in the status."""
    return pb.Instance(
        id=spec.instance_id, name=spec.name, owner=spec.owner,
        spec=pb.InstanceSpec(
            cores=spec.cores, memory_mib=spec.memory_mib,
            disks=[pb.Disk(uri=d.uri, persistent=d.persistent) for d in spec.disks],
            nics=_nics(spec.asked_nics), hints=spec.hints, group_name=spec.group_name),
        status=pb.InstanceStatus(state=as_instance_state(state), vm_id=vm_id,
                                 nics=_nics(spec.nics)))


def vm_info_pb(vm: VmInfo) -> nm.VmInfo:
    return nm.VmInfo(instance_id=vm.instance_id, vm_id=vm.vm_id,
                     state=as_instance_state(vm.state), name=vm.name, owner=vm.owner,
                     cores=vm.cores, memory_mib=vm.memory_mib)


def vm_stats_pb(s: VmStats) -> nm.VmStats:
    return nm.VmStats(
        instance_id=s.instance_id, cpu_time_seconds=s.cpu_time_seconds,
        memory_bytes=s.memory_bytes, block_read_bytes=s.block_read_bytes,
        block_write_bytes=s.block_write_bytes, block_read_requests=s.block_read_requests,
        block_write_requests=s.block_write_requests,
        network_receive_bytes=s.network_receive_bytes,
        network_transmit_bytes=s.network_transmit_bytes,
        network_receive_packets=s.network_receive_packets,
        network_transmit_packets=s.network_transmit_packets)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def report_pb(obs: Observation, seq: int) -> reg.InstanceReport:
    vm = obs.vm
    return reg.InstanceReport(
        instance_id=vm.instance_id, vm_id=vm.vm_id, state=as_instance_state(vm.state),
        message=obs.message,
        time=timestamp(obs.time),
        spec=instance_from_spec(obs.spec, vm.vm_id, vm.state) if obs.spec else None,
        suspend_file=obs.suspend_file, report_seq=seq)
