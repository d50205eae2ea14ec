"""Across hosts, as the CM decides it (issue 13): hosts say whether and where they
migrate, decayed as Tashi meant it, evacuation's plan and pace, resume where the
saved state is.  Real migrations between two libvirtds are in tests/e2e."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.runtime.client import TashiError
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, activate, inproc_cm, register_host, vm, wait_for

C = grpc.StatusCode
S = pb


@pytest.fixture
def cmx(tmp_path: Path) -> Iterator[InProcCM]:
    with inproc_cm(tmp_path, decay_seconds=0.4, expire_host_seconds=3600) as cm:
        cm.client().create_user("alice")
        yield cm


def running(cm: InProcCM, host: str, name: str, cores: int = 1) -> pb.Instance:
    root = cm.client()
    [inst] = cm.client("alice").create_instances(vm(name, cores=cores))
    activate(root, inst.id, root.get_host(host).id)
    root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(name=host, reports=[
        nr.InstanceReport(instance_id=inst.id, vm_id=f"tashi-{inst.id}",
                          state=S.INSTANCE_STATE_RUNNING, report_seq=time.time_ns() // 1000)]))
    return root.get_instance(inst.id)


def refused(call, code: grpc.StatusCode, text: str = "") -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TashiError) as err:
        call()
    assert err.value.code == code and text in err.value.message, err.value


def test_a_host_that_cannot_migrate_is_refused_with_its_reason(cmx: InProcCM) -> None:
    root = cmx.client()
    register_host(root, "h1")
    root.create_host("sim")
    root.call(root.registry.RegisterHost, nr.RegisterHostRequest(
        name="sim", cores=8, memory_mib=16384, version="0.1.0",
        capabilities=pb.HostCapabilities(live_migration=False,
                                          reason="libvirt's test driver cannot migrate")))
    inst = running(cmx, "h1", "a")
    seq = cmx.cluster.events.last_seq
    refused(lambda: cmx.client("alice").migrate_instance(inst.id, "sim"),
            C.FAILED_PRECONDITION, "target host sim cannot live-migrate: libvirt's test driver")
    assert cmx.cluster.events.last_seq == seq
    assert root.get_host("sim").capabilities.reason.startswith("libvirt's test driver")


@pytest.mark.parametrize("uri", ["test:///etc/shadow", "qemu+ssh://h/system?command=/bin/sh",
                                 "qemu+tcp://h/system?pkipath=/etc", "x" * 300])
def test_a_host_may_not_advertise_any_uri(cmx: InProcCM, uri: str) -> None:
    root = cmx.client()
    root.create_host("evil")
    refused(lambda: root.call(root.registry.RegisterHost, nr.RegisterHostRequest(
        name="evil", cores=8, memory_mib=16384, version="0.1.0",
        capabilities=pb.HostCapabilities(migration_uri=uri, live_migration=True))),
        C.INVALID_ARGUMENT, "migration URI")
    assert not root.get_host("evil").up


def test_decayed_until_fresh_word(cmx: InProcCM) -> None:
    root = cmx.client()
    register_host(root, "h1")
    inst = running(cmx, "h1", "a")
    assert not root.get_host("h1").decayed and not root.get_instance(inst.id).status.decayed
    wait_for(lambda: root.get_host("h1").decayed, 5, what="h1 decayed")
    assert root.get_instance(inst.id).status.decayed
    assert cmx.client("alice").get_instance(inst.id).status.decayed
    root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="h1"))
    assert not root.get_host("h1").decayed, "fresh word clears it"
    assert not root.get_instance(inst.id).status.decayed


def test_evacuation_plan_and_pace(cmx: InProcCM) -> None:
    root = cmx.client()
    register_host(root, "h1")
    register_host(root, "h2", cores=64, memory_mib=65536)
    root.create_host("sim")
    root.call(root.registry.RegisterHost, nr.RegisterHostRequest(
        name="sim", cores=64, memory_mib=65536, version="0.1.0"))
    moving = [running(cmx, "h1", f"r{i}") for i in range(3)]
    parked = running(cmx, "h1", "s")
    root.instance_action("Suspend", parked.id)
    root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(name="h1", reports=[
        nr.InstanceReport(instance_id=parked.id, state=S.INSTANCE_STATE_SUSPENDED,
                          suspend_file="/s/x.save", report_seq=time.time_ns() // 1000)]))
    refused(lambda: cmx.client("alice").evacuate_host("h1"), C.PERMISSION_DENIED)
    refused(lambda: root.evacuate_host("h1", parallel=65), C.INVALID_ARGUMENT)
    resp = root.evacuate_host("h1", parallel=2)
    assert resp.host.state == pb.HOST_STATE_DRAINED
    rows = {r.instance_name: r for r in resp.evacuations}
    assert {rows[m.name].target_host_name for m in moving} == {"h2"}, "sim cannot migrate"
    assert "suspended: its saved state is on h1" in rows["s"].reason
    # These synthetic hosts have no node manager: migrations stay in MigratePrep,
    # so the third waits for a free slot.
    def states() -> list[int]:
        return sorted(root.get_instance(m.id).status.state for m in moving)
    wait_for(lambda: states() == [S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_MIGRATE_PREP,
                                  S.INSTANCE_STATE_MIGRATE_PREP], 5, what="two in flight")
    time.sleep(0.6)
    assert states().count(S.INSTANCE_STATE_MIGRATE_PREP) == 2, "never more than parallel"
    assert all(root.get_instance(m.id).status.migration_target_host_id
               == root.get_host("h2").id for m in moving
               if root.get_instance(m.id).status.state == S.INSTANCE_STATE_MIGRATE_PREP)


def test_a_resume_goes_where_the_saved_state_is_even_if_drained(cmx: InProcCM) -> None:
    root = cmx.client()
    h1 = register_host(root, "h1").host
    h2 = register_host(root, "h2").host
    inst = running(cmx, "h1", "a")
    root.instance_action("Suspend", inst.id)
    root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(name="h1", reports=[
        nr.InstanceReport(instance_id=inst.id, state=S.INSTANCE_STATE_SUSPENDED,
                          suspend_file="/s/a.save", report_seq=time.time_ns() // 1000)]))
    root.set_host_state("h1", pb.HOST_STATE_DRAINED)
    root.instance_action("Resume", inst.id)
    res = root.activate([pl.Placement(instance_id=inst.id, host_id=h2.id)]).results[0]
    assert not res.accepted and "its saved state is on host h1" in res.reason
    activate(root, inst.id, h1.id)  # drained, yet it holds the saved state
    assert root.get_instance(inst.id).status.host_id == h1.id
