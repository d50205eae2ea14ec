"""What the driver knows of each VM it runs, and small helpers over libvirt errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import libvirt

from tashi.nm.libvirt import domain_xml as dx
from tashi.nm.model import UNSPECIFIED, DiskSpec, NicSpec, VmInfo, VmSpec


@dataclass
class Managed:
    """A VM this NM runs (or is starting)."""

    meta: dx.TashiMetadata
    vm_id: str
    state: int = UNSPECIFIED
    overlays: list[str] = field(default_factory=list)
    suspend_file: str = ""

    def info(self, state: int | None = None) -> VmInfo:
        m = self.meta
        return VmInfo(instance_id=m.instance_id, vm_id=self.vm_id,
                      state=self.state if state is None else state, name=m.name,
                      owner=m.owner, cores=m.cores, memory_mib=m.memory_mib)


def spec_of(meta: dx.TashiMetadata) -> VmSpec:
    asked = meta.nics if meta.asked_nics is None else meta.asked_nics
    return VmSpec(instance_id=meta.instance_id, name=meta.name, owner=meta.owner,
                  cores=meta.cores, memory_mib=meta.memory_mib,
                  disks=tuple(DiskSpec(d.uri, d.persistent) for d in meta.disks),
                  nics=tuple(NicSpec(n.network_id, n.mac, n.ip) for n in meta.nics),
                  hints=dict(meta.hints),
                  asked_nics=tuple(NicSpec(n.network_id, n.mac, n.ip) for n in asked),
                  group_name=meta.group_name)


def lv_message(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


def is_no_domain(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
