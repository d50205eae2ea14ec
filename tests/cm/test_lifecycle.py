"""The instance state machine, driven directly (no gRPC): every user action from
every state is either the documented transition or FAILED_PRECONDITION naming the state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.cm import instances
from tashi.cm.cluster import Cluster
from tashi.cm.config import CMConfig
from tashi.cm.lifecycle import DESTROY_AT_ONCE, USER_ACTIONS, settle
from tashi.cm.txn import Txn, copy_of
from tashi.runtime.errors import ServiceError
from tashi.runtime.names import instance_state_name
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import db_url, open_test_store

ALL_STATES = [s for s in pb.InstanceState.values() if s != pb.INSTANCE_STATE_UNSPECIFIED]
RESP = {"shutdown": cmpb.ShutdownInstanceResponse, "pause": cmpb.PauseInstanceResponse,
        "unpause": cmpb.UnpauseInstanceResponse, "suspend": cmpb.SuspendInstanceResponse,
        "resume": cmpb.ResumeInstanceResponse}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    store = open_test_store(tmp_path)
    cfg = CMConfig(db=db_url(tmp_path))
    c = Cluster(cfg, store)
    c.recover()
    calls: list[tuple[str, int]] = []
    c.dispatch = lambda action, iid: calls.append((action, iid))
    c.calls = calls  # type: ignore[attr-defined]
    yield c
    store.close()


def force(c: Cluster, state: int) -> pb.Instance:
    """An instance of root's in `state`, on host 1 when the state holds a host."""
    [inst] = instances.create(c, "root", cmpb.CreateInstanceRequest(
        instance=pb.Instance(name=f"s{state}", spec=pb.InstanceSpec(cores=1, memory_mib=64))
    )).instances
    new = copy_of(inst)
    new.status.state = state
    new.status.host_id, new.status.host_name = 1, "h1"
    settle(new.status)
    # Set-up, not a move: store the state as a past run would have left it,
    # around the transition check that every real path goes through.
    def stage(txn: Txn) -> None:
        txn.changes.append(("instance", new.id, new))
        txn.events.append(pb.Event(type=pb.EVENT_TYPE_INSTANCE_UPDATED, instance=new))
    c.write("test", stage)
    return c.instances[inst.id]


@pytest.mark.parametrize("action", sorted(RESP))
@pytest.mark.parametrize("state", ALL_STATES, ids=instance_state_name)
def test_every_action_from_every_state(cluster: Cluster, action: str, state: int) -> None:
    inst = force(cluster, state)
    allowed, entering = USER_ACTIONS[action]
    ref = cmpb.InstanceRef(id=inst.id)
    seq = cluster.events.last_seq
    if state in allowed:
        resp = instances.act(cluster, "root", action, "", ref, RESP[action])
        assert resp.instance.status.state == entering  # type: ignore[attr-defined]
        assert cluster.instances[inst.id].status.state == entering
        assert cluster.events.last_seq == seq + 1
        expect_call = action != "resume"
        assert (((action, inst.id) in cluster.calls) == expect_call)  # type: ignore[attr-defined]
    else:
        with pytest.raises(ServiceError) as err:
            instances.act(cluster, "root", action, "", ref, RESP[action])
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert instance_state_name(state) in err.value.message
        assert cluster.instances[inst.id].status.state == state, "a refused action moved it"
        assert cluster.events.last_seq == seq


@pytest.mark.parametrize("state", ALL_STATES, ids=instance_state_name)
def test_destroy_from_every_state(cluster: Cluster, state: int) -> None:
    inst = force(cluster, state)
    resp = instances.destroy(cluster, "root", cmpb.DeleteInstanceRequest(
        instance=cmpb.InstanceRef(id=inst.id)))
    if state in DESTROY_AT_ONCE or not inst.status.host_id:
        assert resp.instance.status.state == pb.INSTANCE_STATE_EXITED
        assert inst.id not in cluster.instances
    else:
        assert cluster.instances[inst.id].status.state == pb.INSTANCE_STATE_DESTROYING
        called = ("destroy", inst.id) in cluster.calls  # type: ignore[attr-defined]
        assert called == (state != pb.INSTANCE_STATE_ORPHANED), \
            "an orphaned instance is destroyed when its node manager reports again"


def test_usage_follows_states(cluster: Cluster) -> None:
    running = force(cluster, pb.INSTANCE_STATE_RUNNING)
    force(cluster, pb.INSTANCE_STATE_PAUSED)
    force(cluster, pb.INSTANCE_STATE_SUSPENDED)
    force(cluster, pb.INSTANCE_STATE_HELD)
    use = cluster.usage[1]
    assert (use.count, use.cores, use.memory_mib) == (2, 2, 128)
    instances.destroy(cluster, "root", cmpb.DeleteInstanceRequest(
        instance=cmpb.InstanceRef(id=running.id)))
    assert cluster.usage[1].count == 2, "Destroying still holds the host until the NM is done"


@pytest.mark.parametrize("start", [pb.INSTANCE_STATE_RUNNING, pb.INSTANCE_STATE_PAUSED],
                         ids=instance_state_name)
def test_failed_shutdown_returns_to_where_it_was(tmp_path: Path, start: int) -> None:
    """The NM cannot be reached: the instance goes back to its state, with the reason."""
    import time

    from tashi.cm import nodes
    from tashi.cm.dispatch import Dispatcher
    from tashi.v1 import node_registry_pb2 as nr

    store = open_test_store(tmp_path)
    cfg = CMConfig(db=db_url(tmp_path), nm_call_seconds=2)
    c = Cluster(cfg, store)
    dispatcher = Dispatcher(c)
    c.recover()
    try:
        from tashi.cm import admin
        admin.create_host(c, "root", cmpb.CreateHostRequest(name="h1"))
        nodes.register(c, "root", nr.RegisterHostRequest(
            name="h1", cores=4, memory_mib=4096, version="0.1.0", nm_address="127.0.0.1:1"))
        inst = force(c, start)
        resp = instances.act(c, "root", "shutdown", "", cmpb.InstanceRef(id=inst.id),
                             cmpb.ShutdownInstanceResponse)
        assert resp.instance.status.state == pb.INSTANCE_STATE_SHUTTING_DOWN  # type: ignore
        deadline = time.monotonic() + 10
        while c.instances[inst.id].status.state == pb.INSTANCE_STATE_SHUTTING_DOWN:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        after = c.instances[inst.id]
        assert after.status.state == start
        assert "shutdown on h1 failed: UNAVAILABLE" in after.status.reason
        assert not after.status.prior_state and not after.spec.hints
    finally:
        dispatcher.close()
        store.close()
