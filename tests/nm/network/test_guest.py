"""A real TCG guest on a Tashi network gets its address from DHCP, and the CM shows it.

The host is the node manager's private libvirtd (tests/guests.py) in its own
mount and network namespaces; the NM converges network 1 (VXLAN, MTU 9000)
inside that network namespace, libvirt plugs the guest's tap into the bridge,
dnsmasq serves DHCP on the bridge, and the guest (Debian's cloud kernel and a
busybox initramfs that loads virtio-net and runs udhcpc) takes an address.
The NM learns it from the DHCPACK and the CM shows it in the instance's NIC.
Nothing of the machine's own network is used or touched.
"""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.nm.network.names import tap_name
from tashi.v1 import resources_pb2 as pb
from tests.guests import BUSYBOX, CMDLINE, PrivateLibvirt, _cpio, _module, cloud_kernel
from tests.harness import (
    CMProcess,
    NMProcess,
    Site,
    activate,
    start_cm,
    stop_all,
    up_host,
    wait_for,
    wait_state,
)
from tests.netns import Namespace, start_dnsmasq

pytestmark = [pytest.mark.system, pytest.mark.slow]

LEASED = "TASHI-GUEST-LEASE"
MODULES = [  # load order: each after what it depends on
    "drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko", "net/core/failover.ko", "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
]
INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
for m in {" ".join(Path(m).stem for m in MODULES)}; do insmod /lib/$m.ko; done
ip link set lo up
ip link set eth0 up
echo "guest eth0 mtu $(cat /sys/class/net/eth0/mtu)"
udhcpc -i eth0 -t 30 -T 1 -A 1 -s /bin/lease
while true; do sleep 1; done
"""
LEASE_SCRIPT = f"""#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr flush dev "$interface"
ip addr add "$ip/$mask" dev "$interface"
echo "{LEASED} $ip"
"""


def dhcp_guest(dest: Path) -> tuple[str, str]:
    """vmlinuz and an initramfs that brings eth0 up with DHCP, in the image store."""
    root = cloud_kernel()
    (dest / "vmlinuz").write_bytes(next(root.glob("boot/vmlinuz-*")).read_bytes())
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [("bin", d, b""), ("lib", d, b""), ("bin/busybox", x, BUSYBOX.read_bytes()),
               ("bin/lease", x, LEASE_SCRIPT.encode()), ("init", x, INIT.encode())]
    entries += [(f"lib/{Path(m).name}", f, _module(root, m)) for m in MODULES]
    (dest / "initrd-dhcp.gz").write_bytes(gzip.compress(_cpio(entries), compresslevel=1))
    return "vmlinuz", "initrd-dhcp.gz"


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[PrivateLibvirt]:
    lv = PrivateLibvirt(tmp_path / "libvirt")
    try:
        yield lv
    finally:
        lv.stop()


@pytest.fixture
def host_ns(libvirtd: PrivateLibvirt) -> Iterator[Namespace]:
    """libvirtd's network namespace under a name, so the test's `ip -n` reaches it."""
    name = f"tashi-t{os.getpid()}-lv"
    subprocess.run(["ip", "netns", "attach", name, str(libvirtd.holder.pid)], check=True)
    try:
        ns = Namespace(name)
        ns.ip("link", "set", "lo", "up")
        ns.ip("link", "add", "up0", "type", "veth", "peer", "name", "wire0")
        ns.ip("addr", "add", "192.0.2.1/24", "dev", "up0")
        for link in ("up0", "wire0"):
            ns.ip("link", "set", link, "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def console(nm: NMProcess, vm_id: str) -> str:
    path = nm.state_dir / "console" / f"{vm_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_guest_gets_a_dhcp_address_the_cm_shows(tmp_path: Path, libvirtd: PrivateLibvirt,
                                                host_ns: Namespace) -> None:
    images = tmp_path / "images"
    images.mkdir()
    kernel, initrd = dhcp_guest(images)
    procs: list[CMProcess | NMProcess] = []
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        site = Site(tmp_path / "ca")  # every service and client over mutual TLS
        cm = start_cm(tmp_path, site=site, images=str(images))
        procs.append(cm)
        client = cm.client()
        client.create_host("g1")
        client.create_network(pb.Network(id=1, name="one", kind=pb.NETWORK_KIND_VXLAN, vni=101,
                                         peers=["192.0.2.1", "192.0.2.2"], mtu=9000))
        netns_path = f"/proc/{libvirtd.holder.pid}/ns/net"
        nm = NMProcess(tmp_path / "nm", cm.address, "g1", site=site,
                       libvirt_uri="qemu:///system",
                       images=images, prefix=libvirtd.enter(),
                       extra=["--uplink", "up0", "--network-namespace", netns_path])
        procs.append(nm)
        host = up_host(client, "g1")
        wait_for(lambda: [(s.network_id, s.ready) for s in client.get_host("g1").networks]
                 == [(1, True)], what="network 1 ready on g1")

        host_ns.ip("addr", "add", "10.72.0.1/24", "dev", "tbr1")
        dnsmasq = start_dnsmasq(host_ns, tmp_path, "tbr1", "10.72.0.100", "10.72.0.120")

        inst = client.create_instances(pb.Instance(name="dhcp", spec=pb.InstanceSpec(
            cores=1, memory_mib=192, nics=[pb.Nic(network_id=1)],
            hints={"kernel": kernel, "initrd": initrd, "cmdline": CMDLINE})))[0]
        activate(client, inst.id, host.id)
        wait_state(client, inst.id, pb.INSTANCE_STATE_RUNNING, timeout=30)
        vm_id = client.get_instance(inst.id).status.vm_id
        tap = host_ns.links()[tap_name(inst.id, 0)]
        assert (tap["master"], tap["mtu"]) == ("tbr1", 9000), "tap on the bridge, jumbo MTU"
        mac = client.get_instance(inst.id).status.nics[0].mac
        assert tap["address"] == "fe:" + mac[3:], "libvirt's tap MAC for the guest's MAC"

        out = wait_for(lambda: LEASED in (text := console(nm, vm_id)) and text, timeout=90,
                       what="the guest's DHCP lease")
        guest_ip = out.split(LEASED, 1)[1].split()[0]
        assert "guest eth0 mtu 9000" in out, "virtio-net took the network's MTU"
        shown = wait_for(lambda: client.get_instance(inst.id).status.nics[0].ip, timeout=10,
                         what="the guest's address in the CM")
        assert shown == guest_ip
        assert (tmp_path / "leases").read_text().split()[2] == guest_ip
        assert host_ns.ping_soon(guest_ip, within=20), "guest answers on the bridge"
        assert host_ns.ping(guest_ip, size=8972, dont_fragment=True), "9000 bytes to the guest"

        client.instance_action("Delete", inst.id)
        wait_state(client, inst.id, -1, timeout=30)
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(10)
        stop_all(*reversed(procs))
