"""Node managers converging the CM's networks: a real CM and two `tashi-nm` processes
(libvirt's test driver) whose host networks live in two namespaces joined by a
veth underlay.  Networks come and go through the CM; status flows back to it;
a VM's address learned from DHCP shows in the CM's instance."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.nm.network.names import tap_name
from tashi.runtime.client import ClusterClient
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import CMProcess, NMProcess, bin_path, start_cm, wait_for
from tests.netns import (
    Namespace,
    dhcp_client,
    kernel_has_8021q,
    namespace,
    start_dnsmasq,
    two_hosts,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

VLAN_UNSUPPORTED = "kernel has no 802.1Q VLAN support (module 8021q not loaded)"


class Site:
    def __init__(self, cm: CMProcess, client: ClusterClient, hosts: dict[str, Namespace],
                 nms: dict[str, NMProcess]) -> None:
        self.cm, self.client, self.hosts, self.nms = cm, client, hosts, nms

    def statuses(self, host: str) -> dict[int, tuple[bool, str]]:
        return {s.network_id: (s.ready, s.reason) for s in self.client.get_host(host).networks}

    def wait_status(self, want: dict[int, tuple[bool, str]], what: str,
                    timeout: float = 10) -> None:
        for host in self.hosts:
            wait_for(lambda h=host: self.statuses(h) == want, timeout=timeout,  # type: ignore[misc]
                     what=f"{host}: {what}")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    images = tmp_path / "images"
    images.mkdir()
    cm = start_cm(tmp_path, images=str(images))
    client = cm.client()
    nms: dict[str, NMProcess] = {}
    try:
        client.create_network(pb.Network(id=1, name="one", kind=pb.NETWORK_KIND_VXLAN, vni=101,
                                         peers=["192.0.2.1", "192.0.2.2"], mtu=9000))
        client.create_network(pb.Network(id=11, name="vlan11", kind=pb.NETWORK_KIND_VLAN,
                                         vlan_id=11))
        with two_hosts() as (a, b):
            hosts = {"hosta": a, "hostb": b}
            for name, ns in hosts.items():
                client.create_host(name)
                nms[name] = NMProcess(
                    tmp_path / name, cm.address, name, images=images,
                    extra=["--uplink", "up0", "--network-namespace", ns.name,
                           "--resync-seconds", "1"])
            yield Site(cm, client, hosts, nms)
            for nm in nms.values():
                nm.stop()
    finally:
        for nm in nms.values():
            nm.stop()
        client.close()
        cm.stop()


def test_nms_converge_the_cms_networks_and_report_them(site: Site) -> None:
    vlan = (True, "") if kernel_has_8021q() else (False, VLAN_UNSUPPORTED)
    site.wait_status({1: (True, ""), 11: vlan}, "network 1 ready, VLAN 11 reported")
    a, b = site.hosts["hosta"], site.hosts["hostb"]
    a.ip("addr", "add", "10.61.0.1/24", "dev", "tbr1")
    b.ip("addr", "add", "10.61.0.2/24", "dev", "tbr1")
    assert a.ping_soon("10.61.0.2", size=8972, dont_fragment=True)

    # A network added later arrives by event, well before the 1 s resync is needed.
    site.client.create_network(pb.Network(id=2, name="two", kind=pb.NETWORK_KIND_VXLAN,
                                          vni=102, group="239.1.1.2"))
    site.wait_status({1: (True, ""), 2: (True, ""), 11: vlan}, "network 2 ready")
    assert a.links()["tbr2"]["mtu"] == 1500

    site.client.delete_network(2)
    site.wait_status({1: (True, ""), 11: vlan}, "network 2 gone")
    for ns in (a, b):
        assert {"tbr2", "tvx2"}.isdisjoint(ns.links())

    # Damage by hand is repaired by the periodic pass.
    a.ip("link", "del", "tvx1")
    wait_for(lambda: a.links().get("tvx1", {}).get("master") == "tbr1", timeout=5,
             what="tvx1 rebuilt")


def test_placement_needs_a_ready_network(site: Site) -> None:
    if kernel_has_8021q():
        pytest.skip("VLAN 11 is ready on this kernel")
    site.wait_status({1: (True, ""), 11: (False, VLAN_UNSUPPORTED)}, "statuses")
    inst = site.client.create_instances(pb.Instance(name="v", spec=pb.InstanceSpec(
        cores=1, memory_mib=64, nics=[pb.Nic(network_id=11)])))[0]
    host = site.client.get_host("hosta")
    res = site.client.activate([pl.Placement(instance_id=inst.id, host_id=host.id)]).results[0]
    assert not res.accepted
    assert res.reason == "network 11 is not ready on host hosta"


def test_dhcp_address_of_a_vm_nic_shows_in_the_cm(site: Site, tmp_path: Path) -> None:
    site.wait_status({1: (True, ""), 11: site.statuses("hosta")[11]}, "network 1 ready")
    inst = site.client.create_instances(pb.Instance(name="web", spec=pb.InstanceSpec(
        cores=1, memory_mib=64, nics=[pb.Nic(network_id=1)])))[0]
    host = site.client.get_host("hosta")
    res = site.client.activate([pl.Placement(instance_id=inst.id, host_id=host.id)]).results[0]
    assert res.accepted, res.reason
    wait_for(lambda: site.client.get_instance(inst.id).status.state == pb.INSTANCE_STATE_RUNNING,
             what="instance Running")
    mac = site.client.get_instance(inst.id).status.nics[0].mac
    assert mac and not site.client.get_instance(inst.id).status.nics[0].ip

    # The test driver runs no guest, so the guest's NIC is a namespace whose
    # veth, with the instance's MAC, is plugged into tbr1 as the tap would be.
    a = site.hosts["hosta"]
    a.ip("addr", "add", "10.71.0.1/24", "dev", "tbr1")
    with namespace("guest") as guest:
        a.ip("link", "add", tap_name(inst.id, 0), "type", "veth", "peer", "name", "eth0",
             "netns", guest.name)
        a.ip("link", "set", tap_name(inst.id, 0), "master", "tbr1", "mtu", "9000", "up")
        guest.ip("link", "set", "eth0", "address", mac, "mtu", "9000", "up")
        dnsmasq = start_dnsmasq(a, tmp_path, "tbr1", "10.71.0.100", "10.71.0.120")
        try:
            result = dhcp_client(guest)
            assert result.returncode == 0, result.stdout + result.stderr
        finally:
            dnsmasq.terminate()
            dnsmasq.wait(10)
    leased = (tmp_path / "leases").read_text().split()[2]
    shown = wait_for(lambda: site.client.get_instance(inst.id).status.nics[0].ip, timeout=10,
                     what="NIC address in the CM")
    assert shown == leased
    listed = subprocess.run(
        [bin_path("tashi"), "--cm", site.cm.address, "-o", "json", "getInstances"],
        capture_output=True, text=True, check=True)
    (row,) = json.loads(listed.stdout)
    nic = row["status"]["nics"][0]
    assert nic["ip"] == leased and nic["mac"] == mac
