"""Many starts in one call: the node manager's StartVms answers each start as
StartVm would, and the cluster manager sends a host's queued starts together
(real tashi-cm and tashi-nm on libvirt's test driver); a node manager of the
version before StartVms still gets its starts, one StartVm each."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tashi.nm.libvirt.driver import LibvirtDriver
from tashi.nm.servicer import NodeManagerServicer
from tashi.runtime import server
from tashi.runtime.nm_client import NodeManagerClient
from tashi.runtime.rpc import TashiError
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import (
    CMProcess,
    NMProcess,
    node_xml,
    scrape,
    start_cm,
    stop_all,
    up_host,
    wait_for,
)

S = pb
METRICS_RE = re.compile(r"metrics on http://(\S+:\d+)")


@pytest.fixture
def procs() -> Iterator[list[CMProcess | NMProcess]]:
    started: list[CMProcess | NMProcess] = []
    yield started
    stop_all(*reversed(started))


def start(iid: int, cores: int = 1, disk: str = "") -> nmpb.StartVmRequest:
    inst = pb.Instance(id=iid, name=f"vm{iid}", owner="alice", spec=pb.InstanceSpec(
        cores=cores, memory_mib=128,
        disks=[pb.Disk(uri=disk, format="qcow2")] if disk else []))
    return nmpb.StartVmRequest(request_id=f"start-{iid}", instance=inst)


def test_each_start_is_answered_on_its_own(tmp_path: Path, images: Path,
                                           procs: list[CMProcess | NMProcess]) -> None:
    cm = start_cm(tmp_path, images=str(images))
    procs.append(cm)
    nm = NMProcess(tmp_path / "h1", cm.address, "h1", images=images, cores=4,
                   memory_mib=4096)
    procs.append(nm)
    starts = [start(1, disk="base.qcow2"), start(2, cores=16), start(3, disk="missing.qcow2"),
              start(4, disk="base.qcow2"), start(5)]
    results = nm.stub.StartVms(nmpb.StartVmsRequest(starts=starts)).results
    codes = [grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION,
             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OK, grpc.StatusCode.OK]
    assert [(r.instance_id, r.code) for r in results] == [
        (i + 1, c.value[0]) for i, c in enumerate(codes)]
    assert "needs 16 cores" in results[1].message and "missing.qcow2" in results[2].message
    assert [(r.vm.vm_id, r.vm.state) for r in results if r.code == 0] == [
        (f"tashi-{i}", S.INSTANCE_STATE_RUNNING) for i in (1, 4, 5)]
    vms = nm.stub.ListVms(nmpb.ListVmsRequest()).vms
    assert sorted(v.instance_id for v in vms) == [1, 4, 5]
    assert sorted(p.name for p in (nm.state_dir / "overlays").iterdir()) == [
        "tashi-1-vda.qcow2", "tashi-4-vda.qcow2"]
    # Retried, the same call starts nothing twice and refuses what it refused.
    again = nm.stub.StartVms(nmpb.StartVmsRequest(starts=starts)).results
    assert [(r.code, r.vm.vm_id) for r in again] == [(r.code, r.vm.vm_id) for r in results]
    assert len(nm.stub.ListVms(nmpb.ListVmsRequest()).vms) == 3
    # One core left: of two starts made at once, one is refused, none overcommits.
    over = nm.stub.StartVms(nmpb.StartVmsRequest(starts=[start(6), start(7)])).results
    assert sorted(r.code for r in over) == [0, grpc.StatusCode.FAILED_PRECONDITION.value[0]]
    assert len(nm.stub.ListVms(nmpb.ListVmsRequest()).vms) == 4
    with pytest.raises(grpc.RpcError) as err:
        nm.stub.StartVms(nmpb.StartVmsRequest(starts=[start(i) for i in range(10, 267)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_hosts_starts_leave_together(tmp_path: Path, images: Path,
                                       procs: list[CMProcess | NMProcess]) -> None:
    """Twenty VMs placed on one host in one decision reach it in a few StartVms
    calls, not twenty StartVm, and all run on their own overlays."""
    cm = start_cm(tmp_path, images=str(images))
    procs.append(cm)
    client = cm.client()
    client.create_host("h1")
    nm = NMProcess(tmp_path / "h1", cm.address, "h1", images=images, cores=32,
                   memory_mib=8192, extra=["--metrics-listen", "127.0.0.1:0"])
    procs.append(nm)
    host = up_host(client, "h1")
    made = client.create_instances(pb.Instance(name="w", spec=pb.InstanceSpec(
        cores=1, memory_mib=128, disks=[pb.Disk(uri="base.qcow2")])), count=20)
    answer = client.activate([pl.Placement(instance_id=i.id, host_id=host.id) for i in made])
    assert all(r.accepted for r in answer.results)
    wait_for(lambda: all(i.status.state == S.INSTANCE_STATE_RUNNING
                         for i in client.list_instances()), what="all 20 running")
    assert {i.status.vm_id for i in client.list_instances()} == {f"tashi-{i.id}" for i in made}
    address = wait_for(lambda: (m := METRICS_RE.search(nm.log_path.read_text())) and m[1],
                       what="the NM's metrics address")
    calls = {dict(k[1]).get("grpc_method"): v for k, v in scrape(address).items()
             if k[0] == "grpc_server_started_total"}
    assert calls.get("StartVm", 0) == 0
    assert 1 <= calls["StartVms"] <= 5, calls
    assert len(list((nm.state_dir / "overlays").iterdir())) == 20


def add_previous_version(servicer: NodeManagerServicer, srv: grpc.Server) -> None:
    """NodeManagerService as a tashi-nm of the version before StartVms serves it:
    every method but that one, which gRPC then answers UNIMPLEMENTED."""

    class Registry:
        def add_generic_rpc_handlers(self, handlers: object) -> None:
            pass  # the same handlers come to add_registered_method_handlers

        def add_registered_method_handlers(self, name: str, handlers: dict[str, Any]) -> None:
            older = {k: v for k, v in handlers.items() if k != "StartVms"}
            srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, older),))
            srv.add_registered_method_handlers(name, older)  # type: ignore[attr-defined]

    nm_grpc.add_NodeManagerServiceServicer_to_server(servicer, Registry())


def test_a_node_manager_without_start_vms_gets_one_start_vm_each(tmp_path: Path,
                                                                   images: Path) -> None:
    driver = LibvirtDriver("test://" + str(node_xml(tmp_path / "node.xml", cores=2)), images,
                           tmp_path / "state")
    running = server.start("127.0.0.1:0", [server.Service(
        "tashi.v1.NodeManagerService", NodeManagerServicer(driver), add_previous_version)])
    client = NodeManagerClient(f"127.0.0.1:{running.port}", timeout=10)
    try:
        with pytest.raises(TashiError) as err:
            client.call(client.stub.StartVms, nmpb.StartVmsRequest(starts=[start(9)]))
        assert err.value.code == grpc.StatusCode.UNIMPLEMENTED
        answers = client.start_vms([start(1, disk="base.qcow2"), start(2, cores=4), start(3)])
        assert isinstance(answers[0], nmpb.VmInfo) and answers[0].vm_id == "tashi-1"
        assert isinstance(answers[1], TashiError)
        assert answers[1].code == grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(answers[2], nmpb.VmInfo) and answers[2].vm_id == "tashi-3"
        assert sorted(v.instance_id for v in driver.list_vms()) == [1, 3]
    finally:
        client.close()
        running.stop()
        driver.close()
