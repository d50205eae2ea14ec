"""Many starts in one call: the node manager's StartVms answers each start as
StartVm would, and the cluster manager sends a host's queued starts together
(real tashi-cm and tashi-nm on libvirt's test driver)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import CMProcess, NMProcess, scrape, start_cm, stop_all, up_host, wait_for

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
