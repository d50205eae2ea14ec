"""Property-based fuzzing of the protobuf surface against live processes (issue
12): every request message of every RPC, generated with edge values and
mutated fields, or raw random bytes.  Bounded here (about a minute);
bench/bench_fuzz.py runs the long, seeded version.

Phase 1, a cluster manager alone (so only the fuzzer changes it): no answer
is UNKNOWN or INTERNAL, and a refused call changes nothing (the event
sequence stays).  Phase 2, with a scheduler and a node manager on the test
driver: nothing dies and nothing answers UNKNOWN or INTERNAL.

Never fuzzed as an admin: the node registry (a fuzzed host address would make
the CM call it) and the node manager's SendVm (a fuzzed URI would make libvirt
connect to it): nothing here may reach beyond loopback.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tashi.runtime.rpc import channel
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import CMProcess, NMProcess, SchedulerProcess, start_cm, stop_all, vm
from tests.protofuzz import CM_RPCS, NM_RPCS, Rpc, calls, send

BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
ADMIN = "fuzzer"
ADMIN_SURFACE = [r for r in CM_RPCS if r.service != "tashi.v1.NodeRegistryService"]
NM_SURFACE = [r for r in NM_RPCS if r.method.name != "SendVm"]
FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def seeded(cm: CMProcess) -> None:
    root = cm.client()
    root.create_user("alice")
    root.create_host("h1")
    root.create_network(pb.Network(id=1, name="lan", cidr="10.1.0.0/24", default=True))
    cm.client("alice").create_instances(vm("seed", 1, 64), count=3)
    root.close()


@pytest.fixture(scope="module")
def lone_cm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CMProcess,
                                                                           grpc.Channel]]:
    tmp = tmp_path_factory.mktemp("fuzz-cm")
    (tmp / "images").mkdir()
    (tmp / "images" / "base.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 60)
    cm = start_cm(tmp, images=str(tmp / "images"), admins=f"root,{ADMIN}",
                  expire_host_seconds=3600)
    seeded(cm)
    ch = channel(cm.address)
    yield cm, ch
    ch.close()
    stop_all(cm)
    assert cm.proc.returncode == 0, "the cluster manager did not die under the fuzzer"


def event_seq(ch: grpc.Channel) -> int:
    from tashi.v1 import cluster_manager_pb2_grpc as cm_grpc
    return cm_grpc.ClusterManagerServiceStub(ch).ListInstances(
        cmpb.ListInstancesRequest(page_size=1), metadata=(("x-tashi-user", "root"),),
        timeout=5).seq


@FUZZ
@given(call=st.one_of(calls(ADMIN_SURFACE).map(lambda c: (ADMIN, c)),
                      st.tuples(st.sampled_from(["alice", "nobody", ""]), calls(CM_RPCS))))
def test_the_cluster_manager_refuses_cleanly(lone_cm: tuple[CMProcess, grpc.Channel],
                                             call: tuple[str, tuple[Rpc, bytes]]) -> None:
    cm, ch = lone_cm
    user, (rpc, body) = call
    before = event_seq(ch)
    code = send(ch, rpc, body, user)
    assert code not in BAD, f"{rpc} as {user!r} answered {code.name}"
    if code != grpc.StatusCode.OK:
        assert event_seq(ch) == before, f"{rpc} as {user!r} was refused ({code.name}) " \
                                        "but changed the cluster"
    assert cm.alive()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("fuzz-cluster")
    cm = start_cm(tmp, expire_host_seconds=3600)
    root = cm.client()
    root.create_user("alice")
    root.create_host("n1")
    nm = NMProcess(tmp / "nm", cm.address, "n1", heartbeat_seconds=0.5)
    sched = SchedulerProcess(tmp / "sched", cm.address)
    cm_ch, nm_ch = channel(cm.address), channel(nm.address)
    yield {"cm": cm, "nm": nm, "sched": sched, "cm_ch": cm_ch, "nm_ch": nm_ch}
    cm_ch.close()
    nm_ch.close()
    root.close()
    alive = {p.argv[0].rsplit("/", 1)[-1]: p.alive() for p in (cm, nm, sched)}
    stop_all(sched, nm, cm)
    assert all(alive.values()), f"a process died under the fuzzer: {alive}"


@FUZZ
@given(call=st.one_of(calls(NM_SURFACE).map(lambda c: ("nm", c)),
                      calls(CM_RPCS).map(lambda c: ("cm", c))))
def test_nothing_dies_with_a_scheduler_and_a_node_manager(
        cluster: dict[str, object], call: tuple[str, tuple[Rpc, bytes]]) -> None:
    target, (rpc, body) = call
    ch = cluster["nm_ch"] if target == "nm" else cluster["cm_ch"]
    code = send(ch, rpc, body, "alice")  # type: ignore[arg-type]
    assert code not in BAD, f"{rpc} answered {code.name}"
