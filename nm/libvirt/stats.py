"""VM counters read from libvirt: CPU, memory, block and interface totals.

`read_stats` answers one VM (the GetVmStats RPC); `read_usage` answers every
running VM the driver manages for the metrics scrape, in one bulk call
(`virConnectGetAllDomainStats`) where the hypervisor supports it, per domain
otherwise (libvirt's test driver reports state only in bulk).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import libvirt

from tashi.nm.libvirt import guest
from tashi.nm.model import DeviceIO, VmStats, VmUsage

KIB = 1024

BULK_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
              | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU
              | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)
BULK_FLAGS = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE


def read_stats(dom: libvirt.virDomain, instance_id: int) -> VmStats:
    """Raises libvirt.libvirtError when the domain cannot be read at all."""
    info = dom.info()  # [state, max KiB, KiB, vcpus, cpu time ns]
    xml = ET.fromstring(dom.XMLDesc(0))
    blk = [0, 0, 0, 0]
    for target in xml.iterfind("devices/disk/target"):
        try:
            rd_req, rd_bytes, wr_req, wr_bytes, _errs = dom.blockStats(target.get("dev", ""))
        except libvirt.libvirtError:
            continue
        blk = [blk[0] + rd_bytes, blk[1] + wr_bytes, blk[2] + rd_req, blk[3] + wr_req]
    net = [0, 0, 0, 0]
    for target in xml.iterfind("devices/interface/target"):
        try:
            s = dom.interfaceStats(target.get("dev", ""))
        except libvirt.libvirtError:
            continue
        net = [net[0] + s[0], net[1] + s[4], net[2] + s[1], net[3] + s[5]]
    return VmStats(instance_id=instance_id, cpu_time_seconds=info[4] / 1e9,
                   memory_bytes=int(info[2]) * 1024,
                   block_read_bytes=blk[0], block_write_bytes=blk[1],
                   block_read_requests=blk[2], block_write_requests=blk[3],
                   network_receive_bytes=net[0], network_transmit_bytes=net[1],
                   network_receive_packets=net[2], network_transmit_packets=net[3])


# -- every managed domain at once, for the metrics scrape ---------------------------

def _devices(record: Mapping[str, Any], kind: str, keys: tuple[str, str, str, str]
             ) -> tuple[DeviceIO, ...]:
    out = []
    for i in range(int(record.get(f"{kind}.count", 0))):
        p = f"{kind}.{i}."
        values = [int(record.get(p + k, 0)) for k in keys]
        out.append(DeviceIO(str(record.get(p + "name", i)), *values))
    return tuple(out)


def from_bulk(record: Mapping[str, Any]) -> VmUsage | None:
    """A domain's `getAllDomainStats` record; None when the driver left out the
    counters (the test driver reports state only)."""
    if "cpu.time" not in record:
        return None
    cur = int(record.get("balloon.current", 0))
    top = int(record.get("balloon.maximum", cur))
    return VmUsage(
        state=guest.state_of(int(record.get("state.state", 0))),
        cpu_seconds=int(record["cpu.time"]) / 1e9,
        memory_bytes=cur * KIB, maximum_memory_bytes=top * KIB,
        vcpus=int(record.get("vcpu.current", 0)),
        disks=_devices(record, "block", ("rd.bytes", "wr.bytes", "rd.reqs", "wr.reqs")),
        nics=_devices(record, "net", ("rx.bytes", "tx.bytes", "rx.pkts", "tx.pkts")))


class DeviceTargets:
    """Disk and NIC target names per domain, parsed from its XML once (Tashi never
    hot-plugs, so a running domain keeps its devices)."""

    def __init__(self) -> None:
        self._by_uuid: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def of(self, dom: libvirt.virDomain) -> tuple[tuple[str, ...], tuple[str, ...]]:
        uuid = dom.UUIDString()
        found = self._by_uuid.get(uuid)
        if found is None:
            root = ET.fromstring(dom.XMLDesc(0))
            disks = tuple(t.get("dev", "") for t in root.iterfind("devices/disk/target"))
            nics = tuple(t.get("dev", "") for t in root.iterfind("devices/interface/target"))
            found = self._by_uuid[uuid] = (tuple(d for d in disks if d),
                                           tuple(n for n in nics if n))
        return found

    def keep_only(self, uuids: set[str]) -> None:
        for gone in set(self._by_uuid) - uuids:
            self._by_uuid.pop(gone, None)


def from_calls(dom: libvirt.virDomain, targets: DeviceTargets) -> VmUsage:
    """One domain through the per-domain calls every driver has."""
    state, max_kib, cur_kib, vcpus, cpu_ns = dom.info()
    disk_names, nic_names = targets.of(dom)
    disks = []
    for dev in disk_names:
        try:
            rd_req, rd_bytes, wr_req, wr_bytes, _errs = dom.blockStats(dev)
        except libvirt.libvirtError:
            continue  # e.g. an empty drive
        disks.append(DeviceIO(dev, rd_bytes, wr_bytes, rd_req, wr_req))
    nics = []
    for dev in nic_names:
        try:
            s = dom.interfaceStats(dev)
        except libvirt.libvirtError:
            continue
        nics.append(DeviceIO(dev, s[0], s[4], s[1], s[5]))
    return VmUsage(state=guest.state_of(state), cpu_seconds=cpu_ns / 1e9,
                   memory_bytes=cur_kib * KIB, maximum_memory_bytes=max_kib * KIB,
                   vcpus=vcpus, disks=tuple(disks), nics=tuple(nics))


def read_usage(conn: libvirt.virConnect, wanted: Mapping[str, int], targets: DeviceTargets
               ) -> dict[int, VmUsage]:
    """Usage of the running domains named in `wanted` (domain name -> instance id),
    by instance id.  Raises libvirt.libvirtError when libvirt cannot be read."""
    out: dict[int, VmUsage] = {}
    seen: set[str] = set()
    for dom, record in conn.getAllDomainStats(BULK_STATS, BULK_FLAGS):
        instance_id = wanted.get(dom.name())
        if instance_id is None:
            continue
        try:
            usage = from_bulk(record)
            if usage is None:
                seen.add(dom.UUIDString())
                usage = from_calls(dom, targets)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # went away between the listing and the call
            raise
        out[instance_id] = usage
    targets.keep_only(seen)
    return out
