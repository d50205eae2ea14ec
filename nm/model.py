"""Plain values the node manager's logic works on; protobuf stays at the edges
(`convert.py`).  States use the wire enum's numbers (tashi.v1.InstanceState)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tashi.v1 import resources_pb2 as pb

RUNNING = pb.INSTANCE_STATE_RUNNING
PAUSED = pb.INSTANCE_STATE_PAUSED
SUSPENDED = pb.INSTANCE_STATE_SUSPENDED
EXITED = pb.INSTANCE_STATE_EXITED
HELD = pb.INSTANCE_STATE_HELD
SHUTTING_DOWN = pb.INSTANCE_STATE_SHUTTING_DOWN
MIGRATE_PREP = pb.INSTANCE_STATE_MIGRATE_PREP
MIGRATE_TRANS = pb.INSTANCE_STATE_MIGRATE_TRANS
UNSPECIFIED = pb.INSTANCE_STATE_UNSPECIFIED


@dataclass(frozen=True)
class DiskSpec:
    uri: str  # relative to the image store
    persistent: bool = False
    fmt: str = ""  # as the CM recorded it when the image entered the store


@dataclass(frozen=True)
class NicSpec:
    network_id: int
    mac: str = ""
    ip: str = ""
    bridge: str = ""  # filled by the network plumbing before the domain is built
    mtu: int = 0


@dataclass(frozen=True)
class VmSpec:
    """What the CM asks this host to run.

    `nics` are the NICs in effect (the instance's status: the MAC assigned at
    creation, the address allocated or learned), the ones the domain gets;
    `asked_nics` are the owner's request (its spec), kept only so a report can
    hand back the instance's spec unchanged.
    """

    instance_id: int
    name: str
    owner: str
    cores: int
    memory_mib: int
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    hints: dict[str, str] = field(default_factory=dict)
    asked_nics: tuple[NicSpec, ...] = ()
    group_name: str = ""


@dataclass(frozen=True)
class VmInfo:
    instance_id: int
    vm_id: str
    state: int
    name: str = ""
    owner: str = ""
    cores: int = 0
    memory_mib: int = 0


@dataclass(frozen=True)
class VmStats:
    instance_id: int
    cpu_time_seconds: float = 0.0
    memory_bytes: int = 0
    block_read_bytes: int = 0
    block_write_bytes: int = 0
    block_read_requests: int = 0
    block_write_requests: int = 0
    network_receive_bytes: int = 0
    network_transmit_bytes: int = 0
    network_receive_packets: int = 0
    network_transmit_packets: int = 0


@dataclass(frozen=True)
class DeviceIO:
    """One disk (read/write) or NIC (receive/transmit) of a VM, named as the
    hypervisor names the device (e.g. "vda", "vnet3")."""

    device: str
    in_bytes: int = 0  # read, or received
    out_bytes: int = 0  # written, or transmitted
    in_ops: int = 0  # read requests, or packets received
    out_ops: int = 0  # write requests, or packets transmitted


@dataclass(frozen=True)
class VmUsage:
    """What one running VM uses right now, device by device: what the node
    manager's metrics export (`VmStats` is the summed view the RPC answers)."""

    state: int  # Tashi's (RUNNING, PAUSED, EXITED; UNSPECIFIED when unknown)
    cpu_seconds: float
    memory_bytes: int  # what the VM has now (balloon size)
    maximum_memory_bytes: int
    vcpus: int
    disks: tuple[DeviceIO, ...] = ()
    nics: tuple[DeviceIO, ...] = ()


@dataclass(frozen=True)
class HostFacts:
    cores: int
    memory_mib: int  # total, before the NM's reserve
    hypervisor: str  # e.g. "QEMU 7.2.0, libvirt 9.0.0"
    live_migration: bool = False
    no_migration_reason: str = ""  # why not, when live_migration is False


@dataclass(frozen=True)
class MigrationPaths:
    """A migrating VM's files on the target host (state dirs may differ)."""

    disks: tuple[str, ...] = ()
    kernel: str = ""
    initrd: str = ""
    console_log: str = ""


@dataclass(frozen=True)
class Observation:
    """One change the node manager saw happen to a VM, to be reported to the CM."""

    vm: VmInfo
    message: str = ""
    suspend_file: str = ""
    spec: VmSpec | None = None
    time: float = field(default_factory=time.time)
