"""One VM's counters read from libvirt: CPU, memory, block and interface totals."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from tashi.nm.model import VmStats


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
