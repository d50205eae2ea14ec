"""A real cluster manager and real node managers (`tashi-nm` on libvirt's test
driver) over gRPC on loopback: registration, the lifecycle the CM drives, start
failures, a killed NM, and reports buffered while the CM is away."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.runtime.client import ClusterClient
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import (
    CMProcess,
    NMProcess,
    activate,
    start_cm,
    stop_all,
    up_host,
    wait_for,
    wait_state,
)

S = pb


@pytest.fixture
def procs() -> Iterator[list[CMProcess | NMProcess]]:
    started: list[CMProcess | NMProcess] = []
    yield started
    stop_all(*reversed(started))


def create(client: ClusterClient, name: str, **kw: object) -> pb.Instance:
    spec = pb.Instance(name=name, spec=pb.InstanceSpec(cores=1, memory_mib=128, **kw))  # type: ignore[arg-type]
    return client.create_instances(spec)[0]


def events_until_now(client: ClusterClient, since: int) -> list[pb.Event]:
    top = client.last_seq()
    out: list[pb.Event] = []
    if top <= since:
        return out
    for batch in client.watch_events(since):
        out.extend(batch)
        if out and out[-1].seq >= top:
            break
    return out


def test_registration_and_lifecycle(tmp_path: Path, images: Path,
                                    procs: list[CMProcess | NMProcess]) -> None:
    cm = start_cm(tmp_path, images=str(images))
    procs.append(cm)
    client = cm.client()
    # an NM whose host was never added is refused, keeps trying, and joins once added
    nm = NMProcess(tmp_path / "h1", cm.address, "h1", images=images, cores=4, memory_mib=4096,
                   reserved_memory=512)
    procs.append(nm)
    wait_for(lambda: "tashi addHost" in nm.log_path.read_text(), what="a clear refusal")
    host = client.create_host("h1")
    host = up_host(client, "h1")
    assert (host.cores, host.memory_mib, host.nm_address) == (4, 3584, nm.address)

    inst = create(client, "web", disks=[pb.Disk(uri="base.qcow2")])
    activate(client, inst.id, host.id)
    wait_state(client, inst.id, S.INSTANCE_STATE_RUNNING)
    got = client.get_instance(inst.id)
    assert got.status.vm_id == f"tashi-{inst.id}" and got.status.host_name == "h1"
    vms = nm.stub.ListVms(nmpb.ListVmsRequest()).vms
    assert [(v.instance_id, v.state, v.owner) for v in vms] == [
        (inst.id, S.INSTANCE_STATE_RUNNING, "root")]
    assert len(list((nm.state_dir / "overlays").iterdir())) == 1

    client.instance_action("Pause", inst.id)
    wait_state(client, inst.id, S.INSTANCE_STATE_PAUSED)
    client.instance_action("Unpause", inst.id)
    wait_state(client, inst.id, S.INSTANCE_STATE_RUNNING)
    client.instance_action("Suspend", inst.id)
    wait_state(client, inst.id, S.INSTANCE_STATE_SUSPENDED)
    assert nm.stub.ListVms(nmpb.ListVmsRequest()).vms == []
    assert len(list((nm.state_dir / "suspend").iterdir())) == 1
    client.instance_action("Resume", inst.id)
    wait_state(client, inst.id, S.INSTANCE_STATE_PENDING)
    activate(client, inst.id, host.id)
    wait_state(client, inst.id, S.INSTANCE_STATE_RUNNING)
    assert list((nm.state_dir / "suspend").iterdir()) == []
    client.instance_action("Shutdown", inst.id)
    wait_state(client, inst.id, -1)
    assert list((nm.state_dir / "overlays").iterdir()) == []

    other = create(client, "db")
    activate(client, other.id, host.id)
    wait_state(client, other.id, S.INSTANCE_STATE_RUNNING)
    client.instance_action("Delete", other.id)
    wait_state(client, other.id, -1)
    assert nm.stub.ListVms(nmpb.ListVmsRequest()).vms == []
    assert client.get_host("h1").used_memory_mib == 0
    # the NM answers NOT_FOUND for a VM it does not run
    with pytest.raises(grpc.RpcError) as err:
        nm.stub.PauseVm(nmpb.PauseVmRequest(instance_id=other.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_failed_start_is_held_with_the_reason(tmp_path: Path, images: Path,
                                              procs: list[CMProcess | NMProcess]) -> None:
    cm = start_cm(tmp_path, images=str(images))
    procs.append(cm)
    client = cm.client()
    client.create_host("h1")
    nm = NMProcess(tmp_path / "h1", cm.address, "h1", images=images)
    procs.append(nm)
    host = up_host(client, "h1")
    inst = create(client, "k", hints={"kernel": "boot/missing-vmlinuz"})
    activate(client, inst.id, host.id)
    wait_state(client, inst.id, S.INSTANCE_STATE_HELD)
    held = client.get_instance(inst.id)
    assert "missing-vmlinuz" in held.status.reason and held.status.host_id == 0
    assert nm.stub.ListVms(nmpb.ListVmsRequest()).vms == []
    assert list((nm.state_dir / "overlays").iterdir()) == []


@pytest.mark.slow
def test_killed_nm_orphans_then_reregisters(tmp_path: Path, images: Path,
                                            procs: list[CMProcess | NMProcess]) -> None:
    """With the test driver the VMs die with the NM process, so the restarted NM
    reports none and the CM removes them (Tashi's rule); the real-guest test shows
    re-adoption."""
    cm = start_cm(tmp_path, images=str(images), expire_host_seconds=2)
    procs.append(cm)
    client = cm.client()
    client.create_host("h1")
    nm = NMProcess(tmp_path / "h1", cm.address, "h1", images=images, heartbeat_seconds=0.5)
    host = up_host(client, "h1")
    inst = create(client, "a")
    activate(client, inst.id, host.id)
    wait_state(client, inst.id, S.INSTANCE_STATE_RUNNING)
    nm.kill()
    wait_state(client, inst.id, S.INSTANCE_STATE_ORPHANED, timeout=2 + 0.5 + 1.5)
    assert not client.get_host("h1").up
    nm2 = NMProcess(tmp_path / "h1", cm.address, "h1", images=images, heartbeat_seconds=0.5)
    procs.append(nm2)
    up_host(client, "h1")
    wait_state(client, inst.id, -1)


@pytest.mark.slow
def test_reports_buffered_while_cm_is_away(tmp_path: Path, images: Path,
                                           procs: list[CMProcess | NMProcess]) -> None:
    cm = start_cm(tmp_path, images=str(images))
    client = cm.client()
    client.create_host("h1")
    # Every report at once (not held after the starts' answers), so that the trail
    # below holds only what happened while the CM was away.
    nm = NMProcess(tmp_path / "h1", cm.address, "h1", images=images, heartbeat_seconds=0.3,
                   extra=["--answered-report-seconds", "0"])
    procs.append(nm)
    host = up_host(client, "h1")
    a, b = create(client, "a"), create(client, "b")
    for inst in (a, b):
        activate(client, inst.id, host.id)
        wait_state(client, inst.id, S.INSTANCE_STATE_RUNNING)
    since = client.last_seq()
    address = cm.address
    client.close()
    cm.stop()
    # While the CM is away the VMs change (here by direct calls on the NM, as a guest
    # powering itself off would): a paused, b gone.
    nm.stub.PauseVm(nmpb.PauseVmRequest(instance_id=a.id))
    nm.stub.DestroyVm(nmpb.DestroyVmRequest(instance_id=b.id))
    cm = start_cm(tmp_path, images=str(images), listen=address)
    procs.append(cm)
    client = cm.client()
    wait_state(client, b.id, -1)
    wait_state(client, a.id, S.INSTANCE_STATE_PAUSED)
    up_host(client, "h1")
    trail = [(e.instance.id, e.instance.status.state, e.type, e.message)
             for e in events_until_now(client, since) if e.HasField("instance")]
    assert [t[:3] for t in trail if t[0] == a.id] == [
        (a.id, S.INSTANCE_STATE_ORPHANED, S.EVENT_TYPE_INSTANCE_UPDATED),
        (a.id, S.INSTANCE_STATE_PAUSED, S.EVENT_TYPE_INSTANCE_UPDATED)], trail
    deleted = [t for t in trail if t[0] == b.id and t[2] == S.EVENT_TYPE_INSTANCE_DELETED]
    assert deleted and "destroyed" in deleted[0][3], trail


def test_a_start_landing_after_its_delete_is_ended_not_adopted(
        tmp_path: Path, images: Path, procs: list[CMProcess | NMProcess]) -> None:
    """Issue 15's race: the destroy reaches the NM before the start (it answers
    NOT_FOUND and the instance is removed), then the start lands and the VM runs.
    The CM knows the id was one it gave out, so the VM is ended on its host and the
    deleted instance never comes back (no event about it after the delete)."""
    cm = start_cm(tmp_path, images=str(images))
    procs.append(cm)
    client = cm.client()
    client.create_host("h1")
    # The start below is made as the CM's would be, whose answer tells the CM:
    # its report is held for a second (by default 30 s) and still goes.
    nm = NMProcess(tmp_path / "h1", cm.address, "h1", images=images, cores=4, memory_mib=4096,
                   extra=["--answered-report-seconds", "1"])
    procs.append(nm)
    up_host(client, "h1")
    inst = create(client, "late")
    client.instance_action("Delete", inst.id)
    wait_for(lambda: inst.id not in {i.id for i in client.list_instances()},
             what="the instance deleted")
    after = client.last_seq()
    # The start that was still on its way lands now, after the delete.
    nm.stub.StartVm(nmpb.StartVmRequest(request_id="late-start", instance=inst))
    assert [v.instance_id for v in nm.stub.ListVms(nmpb.ListVmsRequest()).vms] == [inst.id]
    wait_for(lambda: not nm.stub.ListVms(nmpb.ListVmsRequest()).vms,
             what="the stray VM ended on its host")
    assert "was deleted; ending it" in cm.log_path.read_text()
    kept = create(client, "next")
    assert inst.id not in {i.id for i in client.list_instances()}
    about = [e for e in events_until_now(client, after)
             if e.WhichOneof("subject") == "instance" and e.instance.id == inst.id]
    assert about == [], "the deleted instance was never adopted back"
    assert kept.id > inst.id


def test_a_second_copy_on_another_host_is_ended_and_its_reports_go_on(
        tmp_path: Path, images: Path, procs: list[CMProcess | NMProcess]) -> None:
    """A start whose answer the CM never heard, so the instance ran elsewhere
    meanwhile: h2 runs a copy of h1's instance and reports it.  The report is not
    applied (the instance stays on h1), h2's copy is ended, and h2's reports are
    not refused as a whole: what it reports next still reaches the CM."""
    cm = start_cm(tmp_path, images=str(images))
    procs.append(cm)
    client = cm.client()
    nms = {}
    for name in ("h1", "h2"):
        client.create_host(name)
        nms[name] = NMProcess(tmp_path / name, cm.address, name, images=images, cores=4,
                              memory_mib=4096, heartbeat_seconds=0.3,
                              extra=["--answered-report-seconds", "1"])
        procs.append(nms[name])
    h1, h2 = up_host(client, "h1"), up_host(client, "h2")
    x = create(client, "x")
    activate(client, x.id, h1.id)
    wait_state(client, x.id, S.INSTANCE_STATE_RUNNING)
    on_h1 = client.get_instance(x.id)
    since = client.last_seq()
    nms["h2"].stub.StartVm(nmpb.StartVmRequest(request_id="lost-answer", instance=on_h1))
    wait_for(lambda: not nms["h2"].stub.ListVms(nmpb.ListVmsRequest()).vms,
             what="h2's copy of h1's instance ended")
    assert "runs a second copy of instance" in cm.log_path.read_text()
    y = create(client, "y")
    activate(client, y.id, h2.id)
    wait_state(client, y.id, S.INSTANCE_STATE_RUNNING)
    nms["h2"].stub.PauseVm(nmpb.PauseVmRequest(instance_id=y.id))  # only h2's report tells
    wait_state(client, y.id, S.INSTANCE_STATE_PAUSED)
    now = client.get_instance(x.id)
    assert (now.status.state, now.status.host_id) == (S.INSTANCE_STATE_RUNNING, h1.id)
    assert [v.instance_id for v in nms["h1"].stub.ListVms(nmpb.ListVmsRequest()).vms] == [x.id]
    about_x = [e for e in events_until_now(client, since)
               if e.WhichOneof("subject") == "instance" and e.instance.id == x.id]
    assert about_x == [], "nothing h2 said about x was applied"
