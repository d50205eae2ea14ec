"""One bad report or one failed write must not hurt everyone (issue 12): each
test here failed on the code before its fix."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tashi.cm.cluster import Cluster
from tashi.cm.config import CMConfig
from tashi.cm.store import open_store
from tashi.runtime.client import TashiError
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, bin_path, inproc_cm, register_host, vm, wait_for

C = grpc.StatusCode


@pytest.fixture
def cmx(tmp_path: Path) -> Iterator[InProcCM]:
    with inproc_cm(tmp_path) as cm:
        cm.client().create_user("alice")
        yield cm


def stored(cm: InProcCM, tmp_path: Path) -> dict[int, pb.Instance]:
    """The instances as a fresh cluster manager would load them from the store."""
    store = open_store(cm.cfg.db)
    try:
        return dict(Cluster(CMConfig(db=cm.cfg.db), store).instances)
    finally:
        store.close()


def test_a_failure_after_the_commit_leaves_memory_as_the_store(
        cmx: InProcCM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = cmx.client("alice")
    [first] = alice.create_instances(vm("first"))
    real = Cluster._apply
    armed = [True]

    def failing(self: Cluster, kind: str, obj: object, oid: int = 0) -> None:
        if armed[0] and kind == "instance" and getattr(obj, "name", "") == "second":
            armed[0] = False
            raise AttributeError("a bug while applying")
        real(self, kind, obj, oid)  # type: ignore[arg-type]

    monkeypatch.setattr(Cluster, "_apply", failing)
    with pytest.raises(TashiError) as err:
        alice.create_instances(vm("second"))
    assert err.value.code == C.INTERNAL and "id" in err.value.message
    assert cmx.cluster.instances == stored(cmx, tmp_path), "memory is the store's again"
    assert "second" in cmx.cluster.instance_ids, "the committed change is there"
    [third] = alice.create_instances(vm("third"))  # the write path still works
    assert third.id > first.id
    events = [e.seq for e in cmx.cluster.events.read_after(0, 100, 0.0)]
    assert events == list(range(1, len(events) + 1)), "the event sequence has no gap"


def test_a_store_that_cannot_write_answers_unavailable_and_health_says_so(
        cmx: InProcCM, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = cmx.client("alice")
    health = health_pb2_grpc.HealthStub(alice._channel)

    def status() -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

    store = cmx.cluster.store
    real = store.commit

    def full(batch: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "commit", full)
    seq = cmx.cluster.events.last_seq
    with pytest.raises(TashiError) as err:
        alice.create_instances(vm("nowhere"))
    assert err.value.code == C.UNAVAILABLE and "cannot write" in err.value.message
    assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
    assert cmx.cluster.events.last_seq == seq and "nowhere" not in cmx.cluster.instance_ids
    monkeypatch.setattr(store, "commit", real)
    alice.create_instances(vm("somewhere"))
    assert status() == health_pb2.HealthCheckResponse.SERVING


def report(root, host: str, *reports: nr.InstanceReport) -> object:  # type: ignore[no-untyped-def]
    return root.call(root.registry.ReportInstances,
                     nr.ReportInstancesRequest(name=host, reports=list(reports)))


@pytest.mark.parametrize("bad", [
    nr.InstanceReport(instance_id=0, state=pb.INSTANCE_STATE_RUNNING, spec=vm("zero")),
    nr.InstanceReport(instance_id=-5, state=pb.INSTANCE_STATE_RUNNING),
    nr.InstanceReport(instance_id=7, state=pb.INSTANCE_STATE_MIGRATE_TRANS),
    nr.InstanceReport(instance_id=7, state=pb.INSTANCE_STATE_RUNNING, report_seq=2**62),
], ids=["id 0", "negative id", "unreportable state", "seq 2^62"])
def test_malformed_reports_are_refused_and_change_nothing(cmx: InProcCM, bad: object) -> None:
    root = cmx.client()
    register_host(root, "h1")
    seq = cmx.cluster.events.last_seq
    with pytest.raises(TashiError) as err:
        report(root, "h1", bad)
    assert err.value.code == C.INVALID_ARGUMENT
    assert cmx.cluster.events.last_seq == seq


def test_a_report_from_the_far_future_does_not_silence_the_real_ones(cmx: InProcCM) -> None:
    root = cmx.client()
    h1 = register_host(root, "h1").host
    [inst] = root.create_instances(vm("v"))
    root.activate([pl.Placement(instance_id=inst.id, host_id=h1.id)])
    with pytest.raises(TashiError):
        report(root, "h1", nr.InstanceReport(instance_id=inst.id, vm_id="x", report_seq=2**62,
                                             state=pb.INSTANCE_STATE_EXITED))
    assert root.get_instance(inst.id).status.state == pb.INSTANCE_STATE_ACTIVATING
    report(root, "h1", nr.InstanceReport(instance_id=inst.id, vm_id="x", report_seq=10,
                                         state=pb.INSTANCE_STATE_RUNNING))
    assert root.get_instance(inst.id).status.state == pb.INSTANCE_STATE_RUNNING


@pytest.mark.parametrize("spec", [
    pb.InstanceSpec(cores=-1000, memory_mib=64),
    pb.InstanceSpec(cores=1, memory_mib=64, disks=[pb.Disk(uri="../../../../etc/shadow")]),
    pb.InstanceSpec(cores=1, memory_mib=64, disks=[pb.Disk(uri="/etc/shadow")]),
    pb.InstanceSpec(cores=1, memory_mib=64, nics=[pb.Nic(network_id=99)]),
    pb.InstanceSpec(cores=1, memory_mib=64, hints={"h" * 100: "x"}),
], ids=["negative cores", "dotdot disk", "absolute disk", "unknown network", "long hint"])
def test_an_unknown_vm_is_adopted_only_if_a_user_could_have_asked_for_it(
        cmx: InProcCM, spec: pb.InstanceSpec) -> None:
    root = cmx.client()
    register_host(root, "h1")
    seq = cmx.cluster.events.last_seq
    report(root, "h1", nr.InstanceReport(
        instance_id=77, vm_id="tashi-77", state=pb.INSTANCE_STATE_RUNNING, report_seq=1,
        spec=pb.Instance(name="stray", owner="alice", spec=spec)))
    assert 77 not in cmx.cluster.instances and cmx.cluster.events.last_seq == seq
    assert root.get_host("h1").used_cores == 0
    report(root, "h1", nr.InstanceReport(
        instance_id=78, vm_id="tashi-78", state=pb.INSTANCE_STATE_RUNNING, report_seq=2,
        spec=pb.Instance(name="fine", owner="alice",
                         spec=pb.InstanceSpec(cores=2, memory_mib=64))))
    assert root.get_instance(78).owner == "alice", "a valid one still is"
    assert root.get_host("h1").used_cores == 2


def test_list_images_shows_no_link_out_of_the_store(cmx: InProcCM) -> None:
    images = Path(cmx.cfg.images)
    (images / "passwd").symlink_to("/etc/passwd")
    (images / "inside.qcow2").symlink_to(images / "base.qcow2")
    (images / "dangling").symlink_to(images / "nothing-here")
    names = [i.name for i in cmx.client().list_images()]
    assert names == ["base.qcow2", "inside.qcow2", "sub/data.img"]


def run_cm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_path("tashi-cm"), "--listen", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("content", [b"", b"this is not a database" * 100],
                         ids=["empty file", "corrupt file"])
def test_a_store_that_cannot_be_read_ends_in_one_line(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "cm.db"
    db.write_bytes(content)
    res = run_cm("--db", str(db))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and str(db) in res.stderr, res.stderr
    assert db.read_bytes() == content, "the file is left as it was"


@pytest.mark.sqlite_only
def test_a_port_in_use_ends_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run([bin_path("tashi-cm"), "--listen", f"127.0.0.1:{port}", "--db",
                              str(tmp_path / "cm.db")], capture_output=True, text=True,
                             timeout=30)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    # gRPC's own C logging may say it first; ours is the one line that ends it.
    assert res.stderr.strip().splitlines()[-1].startswith("tashi-cm: cannot listen on")


def test_open_watches_cannot_starve_unary_calls(tmp_path: Path) -> None:
    """Before: 128 idle WatchEvents streams took every worker; a heartbeat timed out."""
    with inproc_cm(tmp_path, workers=12, watch_reserve=8, watches_per_caller=2,
                   admins=["root", "ops", "sre"]) as cm:
        root, ops, sre = cm.client(), cm.client("ops"), cm.client("sre")
        register_host(root, "h1")
        streams = [c.watch_events(0) for c in (root, root, ops, ops)]
        try:
            for s in streams:  # each is open and being served
                next(s)
            with pytest.raises(TashiError) as err:
                next(root.watch_events(0))
            assert err.value.code == C.RESOURCE_EXHAUSTED and "root already holds 2" in \
                err.value.message
            with pytest.raises(TashiError) as err:
                next(sre.watch_events(0))
            assert err.value.code == C.RESOURCE_EXHAUSTED
            assert "4 watches and console streams at most" in err.value.message
            for _ in range(20):  # the reserve serves everyone else at once
                beat = root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="h1"),
                                 timeout=2)
                assert beat.registered
            assert len(root.list_hosts()) == 1
        finally:
            for s in streams:
                s.cancel()
        wait_for(lambda: not cm.cm.running or cm.cluster.events.watchers == 0,
                 what="the watches closed")
        with sre.watch_events(0) as again:
            next(again)  # a closed watch frees its slot


def test_bytes_that_are_no_request_are_invalid_argument(cmx: InProcCM) -> None:
    """gRPC itself answers INTERNAL for a request it cannot decode; ours say whose fault."""
    ch = cmx.client()._channel
    call = ch.unary_unary("/tashi.v1.ClusterManagerService/CreateInstance",
                          request_serializer=lambda b: b, response_deserializer=lambda b: b)
    seq = cmx.cluster.events.last_seq
    with pytest.raises(grpc.RpcError) as err:
        call(b"\xff\xff\xff\xff", timeout=5, metadata=(("x-tashi-user", "root"),))
    assert err.value.code() == C.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert cmx.cluster.events.last_seq == seq
