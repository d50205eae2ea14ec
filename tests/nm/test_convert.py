"""An instance's spec and status into the NM and back out in its reports.

The domain gets the NICs in effect (the status), one per NIC asked, in order;
what the NM reports for a VM (and what it reads back from a domain's metadata
after a restart) carries the owner's spec unchanged and the NICs in effect in
the status, where the CM looks for learned addresses.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.nm.convert import instance_from_spec, report_pb, spec_from_instance
from tashi.nm.libvirt import domain_xml as dx
from tashi.nm.libvirt.driver import LibvirtDriver
from tashi.nm.libvirt.records import spec_of
from tashi.nm.model import RUNNING, Observation
from tashi.nm.node import SERVICE_NAME
from tashi.nm.servicer import NodeManagerServicer
from tashi.runtime import server
from tashi.runtime.client import channel
from tashi.v1 import node_manager_pb2 as nm
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import resources_pb2 as pb
from tests.harness import node_xml

MAC0, MAC1 = "52:54:00:00:00:07", "52:54:00:00:01:07"


def instance(iid: int = 7) -> pb.Instance:
    """Two NICs: one on the default network as asked, one with a MAC the user fixed."""
    return pb.Instance(
        id=iid, name=f"web-{iid}", owner="alice",
        spec=pb.InstanceSpec(
            cores=1, memory_mib=128, hints={"x": "y"}, group_name="web",
            nics=[pb.Nic(network_id=0), pb.Nic(network_id=4, mac=MAC1)]),
        status=pb.InstanceStatus(
            state=pb.INSTANCE_STATE_ACTIVATING, host_id=1, host_name="h1",
            nics=[pb.Nic(network_id=3, mac=MAC0, ip="10.0.3.7"),
                  pb.Nic(network_id=4, mac=MAC1, ip="10.0.4.7")]))


def test_domain_nics_are_the_ones_in_effect() -> None:
    spec = spec_from_instance(instance(), {3: ("tbr3", 9000), 4: ("tbr4", 1500)})
    assert [(n.network_id, n.mac, n.ip, n.bridge, n.mtu) for n in spec.nics] == [
        (3, MAC0, "10.0.3.7", "tbr3", 9000), (4, MAC1, "10.0.4.7", "tbr4", 1500)]
    assert (spec.cores, spec.memory_mib, spec.hints, spec.group_name) == (1, 128, {"x": "y"},
                                                                         "web")


def test_a_report_carries_the_spec_as_asked_and_the_nics_in_effect() -> None:
    sent = instance()
    back = instance_from_spec(spec_from_instance(sent), "tashi-7", RUNNING)
    assert (back.id, back.name, back.owner) == (7, "web-7", "alice")
    assert back.spec == sent.spec
    assert back.status.state == pb.INSTANCE_STATE_RUNNING
    assert back.status.vm_id == "tashi-7"
    assert list(back.status.nics) == list(sent.status.nics)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[LibvirtDriver]:
    images = tmp_path / "images"
    images.mkdir()
    uri = "test://" + str(node_xml(tmp_path / "node.xml", cores=4, memory_mib=4096))
    d = LibvirtDriver(uri, images, tmp_path / "state")
    yield d
    d.close()


def test_metadata_keeps_spec_and_status_apart_for_readoption(driver: LibvirtDriver) -> None:
    """What a restarted NM reads from a running domain reports the same instance."""
    sent = instance()
    driver.start_vm(spec_from_instance(sent, {3: ("tbr3", 1500), 4: ("tbr4", 1500)}))
    xml = driver.host.conn().lookupByName("tashi-7").XMLDesc(0)
    macs = [i.get("address") for i in ET.fromstring(xml).iterfind("devices/interface/mac")]
    assert macs == [MAC0, MAC1]
    readopted = spec_of(dx.parse_metadata(xml))
    report = report_pb(Observation(vm=driver.get_vm(7), spec=readopted), seq=1)
    assert report.spec.spec == sent.spec
    assert list(report.spec.status.nics) == list(sent.status.nics)
    assert report.spec.status.vm_id == "tashi-7"


def test_metadata_written_before_the_split_still_reads() -> None:
    """Old metadata had one NIC list.  Hints are the user's and come back as written,
    a key starting '__' too (the NM once dropped those, losing a user's own)."""
    ns = dx.METADATA_NS
    old = (f'<instance xmlns="{ns}"><id>9</id><owner>bob</owner><name>old</name>'
           '<cores>1</cores><memory-mib>64</memory-mib><disks/>'
           f'<nics><nic network="3" mac="{MAC0}" ip="10.0.3.9"/></nics>'
           '<hints><hint key="kernel">vmlinuz</hint>'
           '<hint key="__mine">x</hint></hints></instance>')
    back = instance_from_spec(spec_of(dx.parse_metadata(old)), "tashi-9", RUNNING)
    assert dict(back.spec.hints) == {"kernel": "vmlinuz", "__mine": "x"}
    assert [(n.network_id, n.mac) for n in back.spec.nics] == [(3, MAC0)]
    assert [(n.network_id, n.mac, n.ip) for n in back.status.nics] == [(3, MAC0, "10.0.3.9")]


@pytest.fixture
def stub(driver: LibvirtDriver) -> Iterator[nm_grpc.NodeManagerServiceStub]:
    running = server.start("127.0.0.1:0", [server.Service(
        SERVICE_NAME, NodeManagerServicer(driver),
        nm_grpc.add_NodeManagerServiceServicer_to_server)])
    ch = channel(f"127.0.0.1:{running.port}")
    yield nm_grpc.NodeManagerServiceStub(ch)
    ch.close()
    running.stop(grace=0)


def test_start_needs_a_nic_in_effect_for_every_nic_asked(
        stub: nm_grpc.NodeManagerServiceStub, driver: LibvirtDriver) -> None:
    inst = instance()
    del inst.status.nics[1]
    with pytest.raises(grpc.RpcError) as err:
        stub.StartVm(nm.StartVmRequest(instance=inst))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "asks for 2 NICs but its status has 1" in (err.value.details() or "")
    assert driver.list_vms() == []


def test_resume_finds_the_saved_image_in_the_status(
        stub: nm_grpc.NodeManagerServiceStub, driver: LibvirtDriver) -> None:
    inst = instance()
    assert stub.StartVm(nm.StartVmRequest(instance=inst)).vm.state == pb.INSTANCE_STATE_RUNNING
    saved = stub.SuspendVm(nm.SuspendVmRequest(instance_id=7)).suspend_file
    inst.status.suspend_image = saved
    inst.status.state = pb.INSTANCE_STATE_RESUMING
    vm = stub.ResumeVm(nm.ResumeVmRequest(instance=inst)).vm
    assert vm.state == pb.INSTANCE_STATE_RUNNING
    assert not Path(saved).exists()
