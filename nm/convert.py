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
    """`bridges` maps network id -> (bridge, mtu) as the host's plumbing set them up."""
    bridges = bridges or {}
    return VmSpec(
        instance_id=inst.id, name=inst.name, owner=inst.owner, cores=inst.cores,
        memory_mib=inst.memory_mib,
        disks=tuple(DiskSpec(d.uri, d.persistent) for d in inst.disks),
        nics=tuple(NicSpec(network_id=n.network_id, mac=n.mac, ip=n.ip,
                           bridge=bridges.get(n.network_id, ("", 0))[0],
                           mtu=bridges.get(n.network_id, ("", 0))[1]) for n in inst.nics),
        hints=dict(inst.hints))


def instance_from_spec(spec: VmSpec, vm_id: str = "", state: int = 0) -> pb.Instance:
    return pb.Instance(
        id=spec.instance_id, vm_id=vm_id, state=as_instance_state(state), owner=spec.owner,
        name=spec.name,
        cores=spec.cores, memory_mib=spec.memory_mib,
        disks=[pb.Disk(uri=d.uri, persistent=d.persistent) for d in spec.disks],
        nics=[pb.Nic(network_id=n.network_id, mac=n.mac, ip=n.ip) for n in spec.nics],
        hints=spec.hints)


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
