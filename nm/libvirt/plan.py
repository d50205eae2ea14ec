"""What a start will create, decided before anything is created: disk paths
and overlays, the domain config and its Tashi metadata.  Everything that can be
refused (a missing image, a path outside the store, a NIC without a bridge) is
refused here, so a failed start leaves nothing behind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tashi.nm.errors import FailedPrecondition
from tashi.nm.libvirt import domain_xml as dx
from tashi.nm.libvirt.disks import ImageStore
from tashi.nm.model import VmSpec
from tashi.nm.network.names import stable_mac, tap_name
from tashi.nm.validate import HINT_CMDLINE, HINT_INITRD, HINT_KERNEL


@dataclass(frozen=True)
class Overlay:
    """A qcow2 overlay to create over `base` before the domain starts."""

    base: Path
    fmt: str
    path: Path


@dataclass(frozen=True)
class StartPlan:
    config: dx.DomainConfig
    overlays: tuple[Overlay, ...]


def plan_start(spec: VmSpec, name: str, images: ImageStore, overlay_dir: Path,
               console_dir: Path, domain_type: str) -> StartPlan:
    metas: list[dx.MetaDisk] = []
    overlays: list[Overlay] = []
    devices: list[dx.DiskDevice] = []
    for i, disk in enumerate(spec.disks):
        base = images.resolve(disk.uri)
        fmt = images.checked_format(base, disk.fmt)
        if disk.persistent:
            path, dev_fmt = base, fmt
        else:
            path, dev_fmt = overlay_dir / f"{name}-{dx.disk_target(i)}.qcow2", "qcow2"
            overlays.append(Overlay(base, fmt, path))
        metas.append(dx.MetaDisk(uri=disk.uri, persistent=disk.persistent, path=str(path)))
        devices.append(dx.DiskDevice(path=str(path), fmt=dev_fmt, target=dx.disk_target(i)))
    kernel = initrd = ""
    if spec.hints.get(HINT_KERNEL):
        kernel = str(images.resolve(spec.hints[HINT_KERNEL], "kernel"))
    if spec.hints.get(HINT_INITRD):
        initrd = str(images.resolve(spec.hints[HINT_INITRD], "initrd"))
    macs = [n.mac or stable_mac(spec.instance_id, i) for i, n in enumerate(spec.nics)]
    meta = dx.TashiMetadata(
        instance_id=spec.instance_id, owner=spec.owner, name=spec.name, cores=spec.cores,
        memory_mib=spec.memory_mib, disks=tuple(metas),
        nics=tuple(dx.MetaNic(n.network_id, mac, n.ip) for n, mac in zip(spec.nics, macs,
                                                                        strict=True)),
        hints=dict(spec.hints),
        # The owner's NICs as asked, when given (the CM always gives one per NIC).
        asked_nics=(tuple(dx.MetaNic(n.network_id, n.mac, n.ip) for n in spec.asked_nics)
                    if len(spec.asked_nics) == len(spec.nics) else None),
        group_name=spec.group_name)
    nics = []
    for i, (n, mac) in enumerate(zip(spec.nics, macs, strict=True)):
        if not n.bridge:
            raise FailedPrecondition(f"network {n.network_id} has no bridge on this host")
        nics.append(dx.NicDevice(bridge=n.bridge, mac=mac, mtu=n.mtu,
                                 tap=tap_name(spec.instance_id, i)))
    config = dx.DomainConfig(
        name=name, domain_type=domain_type, memory_mib=spec.memory_mib,
        vcpus=spec.cores, metadata=meta, kernel=kernel, initrd=initrd,
        cmdline=spec.hints.get(HINT_CMDLINE, "") if kernel else "",
        disks=tuple(devices), nics=tuple(nics),
        console_log=str(console_dir / f"{name}.log"))
    return StartPlan(config, tuple(overlays))
