"""The transition table, walked: every cause of a state change (user actions,
placement, node manager answers and reports, the liveness monitor, a CM
restart) applied to an instance in every state.  Each either refuses with a
status code or makes a move the table allows; together they make every
move the table lists, so the table holds nothing that no code does."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tashi.cm import admin, instances, nodes, placement
from tashi.cm.cluster import Cluster
from tashi.cm.config import CMConfig
from tashi.cm.dispatch import Dispatcher
from tashi.cm.lifecycle import TRANSITIONS, IllegalTransition, settle
from tashi.cm.txn import Txn, copy_of
from tashi.runtime.errors import ServiceError
from tashi.runtime.fit import HOSTLESS
from tashi.runtime.names import instance_state_name
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as plpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import db_url, open_test_store, serving_nm

S = pb
ALL_STATES = [s for s in pb.InstanceState.values()
              if s not in (pb.INSTANCE_STATE_UNSPECIFIED, pb.INSTANCE_STATE_EXITED)]


CAPABLE = pb.HostCapabilities(migration_uri="qemu+tcp://h/system", live_migration=True)


class ScriptedNM(nm_grpc.NodeManagerServiceServicer):
    """A node manager that answers every call with success, or fails them all."""

    fail = False
    started = S.INSTANCE_STATE_RUNNING

    def _answer(self, context: grpc.ServicerContext, resp: Any) -> Any:
        if self.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted failure")
        return resp

    def StartVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.StartVmResponse(vm=nmpb.VmInfo(
            vm_id="tashi-x", state=self.started)))

    def ResumeVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.ResumeVmResponse(vm=nmpb.VmInfo(
            vm_id="tashi-x", state=S.INSTANCE_STATE_RUNNING)))

    def PauseVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.PauseVmResponse())

    def UnpauseVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.UnpauseVmResponse())

    def ShutdownVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.ShutdownVmResponse())

    def DestroyVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.DestroyVmResponse())

    def SuspendVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.SuspendVmResponse(suspend_file="/s/1.save"))

    def PrepareReceiveVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.PrepareReceiveVmResponse(cookie="c"))

    def PrepareSourceVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.PrepareSourceVmResponse())

    def SendVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.SendVmResponse())

    def ReceiveVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.ReceiveVmResponse(vm=nmpb.VmInfo(vm_id="tashi-y")))

    def CancelReceiveVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.CancelReceiveVmResponse())

    def GetVm(self, request: Any, context: Any) -> Any:
        return self._answer(context, nmpb.GetVmResponse(vm=nmpb.VmInfo(
            vm_id="tashi-x", state=S.INSTANCE_STATE_RUNNING)))


@pytest.fixture(scope="module")
def nm() -> Iterator[tuple[ScriptedNM, str]]:
    servicer = ScriptedNM()
    with serving_nm(servicer) as address:
        yield servicer, address


class World:
    """A CM with two registered hosts whose NM is the scripted one."""

    def __init__(self, tmp: Path, nm_address: str) -> None:
        self.store = open_test_store(tmp)
        self.c = Cluster(CMConfig(db=db_url(tmp), nm_call_seconds=5), self.store)
        self.c.recover()
        self.dispatcher = Dispatcher(self.c)
        self.c.dispatch = lambda action, iid: None  # the walk runs NM calls itself
        for name in ("h1", "h2"):
            admin.create_host(self.c, "root", cmpb.CreateHostRequest(name=name))
            nodes.register(self.c, "root", nr.RegisterHostRequest(
                name=name, cores=64, memory_mib=65536, version="0.1.0", nm_address=nm_address,
                capabilities=CAPABLE))
        self.h1, self.h2 = self.c.host_ids["h1"], self.c.host_ids["h2"]

    def close(self) -> None:
        self.dispatcher.close()
        self.store.close()

    def force(self, state: int, inst: pb.Instance | None = None,
              prior: int = S.INSTANCE_STATE_RUNNING) -> pb.Instance:
        """An instance stored in `state` (on h1 when the state holds a host)."""
        if inst is None:
            [inst] = instances.create(self.c, "root", cmpb.CreateInstanceRequest(
                instance=pb.Instance(name=f"i{len(self.c.instances)}",
                                     spec=pb.InstanceSpec(cores=1, memory_mib=64)))).instances
        new = copy_of(inst)
        new.status.state = state
        new.status.host_id, new.status.host_name = self.h1, "h1"
        if state in (S.INSTANCE_STATE_MIGRATE_PREP, S.INSTANCE_STATE_MIGRATE_TRANS):
            new.status.migration_source_host_id = self.h1
            new.status.migration_target_host_id = self.h2
        if state == S.INSTANCE_STATE_SHUTTING_DOWN:
            new.status.prior_state = prior
        settle(new.status)
        # Set-up, not a move: the state as a past run left it in the store.
        def stage(txn: Txn) -> None:
            txn.changes.append(("instance", new.id, new))
            txn.events.append(pb.Event(type=S.EVENT_TYPE_INSTANCE_UPDATED, instance=new))
        self.c.write("test", stage)
        return self.c.instances[new.id]


def _report(state: int, host: str = "h1") -> Callable[[World, pb.Instance], object]:
    def run(w: World, inst: pb.Instance) -> object:
        seq = w.c.applied_reports.get(w.c.host_ids[host], 0) + 1
        return nodes.report(w.c, "root", nr.ReportInstancesRequest(name=host, reports=[
            nr.InstanceReport(instance_id=inst.id, vm_id="tashi-r", state=state, report_seq=seq,
                              suspend_file="/s/r.save")]))
    return run


def _user(action: str) -> Callable[[World, pb.Instance], object]:
    resp = {"shutdown": cmpb.ShutdownInstanceResponse, "pause": cmpb.PauseInstanceResponse,
            "unpause": cmpb.UnpauseInstanceResponse, "suspend": cmpb.SuspendInstanceResponse,
            "resume": cmpb.ResumeInstanceResponse, "migrate": cmpb.MigrateInstanceResponse}

    def run(w: World, inst: pb.Instance) -> object:
        return instances.act(w.c, "root", action, "", cmpb.InstanceRef(id=inst.id),
                             resp[action], cmpb.HostRef(name="h2"))
    return run


def _nm_answer(action: str, fail: bool, started: int = S.INSTANCE_STATE_RUNNING,
               prior: int = 0) -> Callable[[World, pb.Instance], object]:
    def run(w: World, inst: pb.Instance) -> object:
        if prior and inst.status.state == S.INSTANCE_STATE_SHUTTING_DOWN:
            w.force(inst.status.state, inst, prior)  # a shutdown that started from `prior`
        w.nm.fail = fail  # type: ignore[attr-defined]
        w.nm.started = started  # type: ignore[attr-defined]
        w.dispatcher._run(action, inst.id)
        return None
    return run


def _expire(w: World, inst: pb.Instance) -> object:
    w.c.heartbeats[w.h1] = time.monotonic() - 10 * w.c.cfg.expire_host_seconds
    return nodes.expire_hosts(w.c)


def _restart(w: World, inst: pb.Instance) -> object:
    w.c.recover()
    return None


def _register_without(w: World, inst: pb.Instance) -> object:
    return nodes.register(w.c, "root", nr.RegisterHostRequest(
        name="h1", cores=64, memory_mib=65536, version="0.1.0",
        nm_address=w.c.hosts[w.h1].nm_address, capabilities=CAPABLE))


CAUSES: dict[str, Callable[[World, pb.Instance], object]] = {
    **{f"user {a}": _user(a) for a in
       ("shutdown", "pause", "unpause", "suspend", "resume", "migrate")},
    "user destroy": lambda w, i: instances.destroy(w.c, "root", cmpb.DeleteInstanceRequest(
        instance=cmpb.InstanceRef(id=i.id))),
    "scheduler places": lambda w, i: placement.activate(w.c, "root", plpb.ActivateInstancesRequest(
        placements=[plpb.Placement(instance_id=i.id, host_id=w.h1)])),
    "scheduler holds": lambda w, i: placement.hold(w.c, "root", plpb.HoldInstancesRequest(
        holds=[plpb.Hold(instance_id=i.id, reason="fits nowhere")])),
    **{f"NM answers {a} {'failed' if f else 'done'}": _nm_answer(a, f)
       for a in ("start", "pause", "unpause", "shutdown", "destroy", "suspend", "migrate")
       for f in (False, True)},
    "NM answers start done, paused": _nm_answer("start", False, S.INSTANCE_STATE_PAUSED),
    "NM answers shutdown failed, started Paused": _nm_answer(
        "shutdown", True, prior=S.INSTANCE_STATE_PAUSED),
    **{f"NM reports {instance_state_name(s)}": _report(s) for s in (
        S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED, S.INSTANCE_STATE_SUSPENDED,
        S.INSTANCE_STATE_EXITED, S.INSTANCE_STATE_HELD, S.INSTANCE_STATE_DESTROYING)},
    "another host reports it running": _report(S.INSTANCE_STATE_RUNNING, "h2"),
    "NM registers without it": _register_without,
    "host expires": _expire,
    "CM restarts": _restart,
}

SEEN: set[tuple[int, int]] = set()


@pytest.fixture(autouse=True)
def record_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Note every move the cluster lets through, intermediate ones included."""
    from tashi.cm import lifecycle
    check = lifecycle.check

    def noting(old: int | None, new: int, iid: int = 0) -> None:
        check(old, new, iid)
        if old is not None:
            SEEN.add((old, new))

    monkeypatch.setattr(lifecycle, "check", noting)


@pytest.mark.parametrize("cause", sorted(CAUSES))
@pytest.mark.parametrize("state", ALL_STATES, ids=instance_state_name)
def test_every_cause_from_every_state(tmp_path: Path, nm: tuple[ScriptedNM, str], cause: str,
                                      state: int) -> None:
    w = World(tmp_path, nm[1])
    w.nm = nm[0]  # type: ignore[attr-defined]
    try:
        inst = w.force(state)
        seq = w.c.events.last_seq
        try:
            CAUSES[cause](w, inst)
        except ServiceError as exc:
            assert exc.code != grpc.StatusCode.INTERNAL
            assert w.c.events.last_seq == seq, "a refused cause changed something"
        after = w.c.instances.get(inst.id)
        end = after.status.state if after is not None else S.INSTANCE_STATE_EXITED
        assert end in TRANSITIONS[state], \
            f"{cause}: {instance_state_name(state)} -> {instance_state_name(end)} not in the table"
        if after is not None:
            st = after.status
            assert list(st.charged_host_ids) == (
                [] if end in HOSTLESS else [st.host_id] + (
                    [st.migration_target_host_id] if st.migration_target_host_id else [])), \
                "the charged hosts follow the state"
            assert not after.spec.hints, "the CM writes no hints"
    finally:
        w.close()


def test_the_walk_makes_every_move_in_the_table() -> None:
    """Runs after the walk (same module): no move is allowed that no cause makes."""
    if len(SEEN) < 10:
        pytest.skip("run with the walk above")
    listed = {(f, t) for f, tos in TRANSITIONS.items() for t in tos
              if f in ALL_STATES and f != t}
    unused = sorted(listed - SEEN)
    assert not unused, "moves the table allows but no cause makes: " + ", ".join(
        f"{instance_state_name(f)}->{instance_state_name(t)}" for f, t in unused)


def test_an_illegal_move_fails_loudly_and_changes_nothing(tmp_path: Path,
                                                          nm: tuple[ScriptedNM, str]) -> None:
    w = World(tmp_path, nm[1])
    try:
        inst = w.force(S.INSTANCE_STATE_PENDING)
        seq = w.c.events.last_seq

        def bad(txn: Txn) -> None:
            new = copy_of(inst)
            new.status.state = S.INSTANCE_STATE_PAUSING
            txn.put(new, S.EVENT_TYPE_INSTANCE_UPDATED)

        with pytest.raises(IllegalTransition, match="Pending -> Pausing"):
            w.c.write("test", bad)
        assert w.c.instances[inst.id].status.state == S.INSTANCE_STATE_PENDING
        assert w.c.events.last_seq == seq

        def born_running_nowhere(txn: Txn) -> None:
            txn.put(pb.Instance(id=999, name="x", status=pb.InstanceStatus(
                state=S.INSTANCE_STATE_MIGRATE_TRANS)), S.EVENT_TYPE_INSTANCE_CREATED)

        with pytest.raises(IllegalTransition, match="born"):
            w.c.write("test", born_running_nowhere)
        assert 999 not in w.c.instances
    finally:
        w.close()
