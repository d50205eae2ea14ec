"""Hosts that stop heartbeating go down and their instances are Orphaned, never deleted;
the node manager's next registration reconciles them (Tashi's rules)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from tashi.cm import nodes
from tashi.runtime.client import TashiError
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import inproc_cm, register_host, vm, wait_for

S = pb


def running_on(root, host_id: int, names: list[str]) -> list[pb.Instance]:  # type: ignore[no-untyped-def]
    vms = root.create_instances(vm("v", 1, 128), count=len(names))
    root.activate([pl.Placement(instance_id=v.id, host_id=host_id) for v in vms])
    root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(name="h1", reports=[
        nr.InstanceReport(instance_id=v.id, vm_id=f"vm{v.id}", state=S.INSTANCE_STATE_RUNNING,
                          report_seq=i + 1) for i, v in enumerate(vms)]))
    return vms


def test_silent_host_orphans_then_reconciles(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, expire_host_seconds=1.0) as cm:
        root = cm.client()
        host = register_host(root, "h1").host
        vms = running_on(root, host.id, ["a", "b", "c"])
        t0 = time.monotonic()
        wait_for(lambda: not root.get_host("h1").up, timeout=5, what="host down")
        assert time.monotonic() - t0 < 2.5
        states = {i.id: i for i in root.list_instances()}
        assert all(states[v.id].status.state == S.INSTANCE_STATE_ORPHANED for v in vms)
        assert "stopped answering" in states[vms[0].id].status.reason
        beat = root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="h1"))
        assert not beat.registered, "a host marked down must register again"
        # The NM comes back running a and b only: c is removed, a and b run again.
        register_host(root, "h1", add=False, instances=[
            nr.InstanceReport(instance_id=vms[0].id, vm_id="vm-a", state=S.INSTANCE_STATE_RUNNING),
            nr.InstanceReport(instance_id=vms[1].id, vm_id="vm-b", state=S.INSTANCE_STATE_PAUSED),
        ])
        after = {i.id: i for i in root.list_instances()}
        assert after[vms[0].id].status.state == S.INSTANCE_STATE_RUNNING
        assert after[vms[1].id].status.state == S.INSTANCE_STATE_PAUSED
        assert vms[2].id not in after
        assert root.get_host("h1").up


def test_start_in_flight_on_a_silent_host_is_kept(tmp_path: Path) -> None:
    """An instance placed but not yet started when its host goes silent stays
    Activating (the CM's start call settles it), and the host registering again
    without it does not delete it: seen with 1,000 hosts, where a burst of late
    heartbeats once removed thousands of VMs that had never started."""
    with inproc_cm(tmp_path, expire_host_seconds=1.0) as cm:
        root = cm.client()
        host = register_host(root, "h1").host
        [placed] = root.create_instances(vm("p", 1, 128), count=1)
        root.activate([pl.Placement(instance_id=placed.id, host_id=host.id)])
        wait_for(lambda: not root.get_host("h1").up, timeout=5, what="host down")
        assert root.get_instance(placed.id).status.state == S.INSTANCE_STATE_ACTIVATING
        register_host(root, "h1", add=False, instances=[])
        got = root.get_instance(placed.id)
        assert (got.status.state, got.status.host_id) == (S.INSTANCE_STATE_ACTIVATING, host.id)
        assert root.get_host("h1").used_cores == 1


def test_heartbeats_keep_host_up(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, expire_host_seconds=1.0) as cm:
        root = cm.client()
        register_host(root, "h1")
        for _ in range(8):
            assert root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="h1")).registered
            time.sleep(0.25)
        assert root.get_host("h1").up


def test_unknown_vm_reported_is_registered(tmp_path: Path) -> None:
    with inproc_cm(tmp_path) as cm:
        root = cm.client()
        cm.client().create_user("alice")
        spec = vm("stray", 2, 512)
        spec.owner = "alice"
        register_host(root, "h1", instances=[nr.InstanceReport(
            instance_id=77, vm_id="tashi-77", state=S.INSTANCE_STATE_RUNNING, spec=spec)])
        got = root.get_instance("stray")
        assert (got.id, got.owner, got.status.state, got.status.host_name) == (77, "alice",
                                                                 S.INSTANCE_STATE_RUNNING, "h1")
        [new] = root.create_instances(vm("next", 1, 64))
        assert new.id > 77, "ids never collide with adopted ones"


@pytest.mark.sqlite_only  # on a shared store a restart is a takeover: tests/e2e/test_failover.py
def test_cm_restart_orphans_and_pends(tmp_path: Path) -> None:
    with inproc_cm(tmp_path) as cm:
        root = cm.client()
        host = register_host(root, "h1").host
        [run] = running_on(root, host.id, ["x"])
        [act] = root.create_instances(vm("act", 1, 64))
        root.activate([pl.Placement(instance_id=act.id, host_id=host.id)])
        [pend] = root.create_instances(vm("pend", 1, 64))
    with inproc_cm(tmp_path) as cm:
        root = cm.client()
        states = {i.name: i.status.state for i in root.list_instances()}
        assert states == {run.name: S.INSTANCE_STATE_ORPHANED, "act": S.INSTANCE_STATE_PENDING,
                          "pend": S.INSTANCE_STATE_PENDING}
        assert not root.get_host("h1").up, "hosts start down until they register"
        assert pend.id


def test_time_the_cm_did_not_run_is_not_counted_against_hosts(tmp_path: Path) -> None:
    """Issue 16: a CM SIGSTOPped past expire_host_seconds woke, marked every host down
    and orphaned their VMs, then took them back as the NMs re-registered.  (The
    monitor finding its own stall, with real processes: tests/e2e/test_silent_cm.py.)"""
    with inproc_cm(tmp_path, expire_host_seconds=3600.0) as cm:
        root = cm.client()
        register_host(root, "h1")
        register_host(root, "h2")
        c = cm.cluster
        h1, h2 = root.get_host("h1").id, root.get_host("h2").id
        with c.lock:  # the monitor's own round waits for it
            c.heartbeats[h1] = time.monotonic() - 4000  # last heard just before a 4000 s pause
            c.heartbeats[h2] = time.monotonic()  # heard just after it
            nodes.forgive_stall(c, 4000)
            assert c.heartbeats[h2] <= time.monotonic(), "never credited into the future"
            assert nodes.expire_hosts(c) == 0
        assert root.get_host("h1").up and root.get_host("h2").up
        with c.lock:  # silent for as long while the CM ran: down
            c.heartbeats[h1] = time.monotonic() - 4000
            assert nodes.expire_hosts(c) == 1
        assert not root.get_host("h1").up and root.get_host("h2").up


def test_calls_waiting_for_the_lock_never_take_the_threads_heartbeats_need(
        tmp_path: Path) -> None:
    """While calls wait for the cluster's lock, at most watch_reserve - 8 of them hold
    a server thread, a third of those per caller; the next is refused at once with
    a "try again after" (RpcClient.call waits and sends it again, so callers see it
    succeed later), and heartbeats keep being answered, so no host expires behind
    a burst of reports, registrations or a user's creates."""
    with inproc_cm(tmp_path, workers=24, watch_reserve=14, expire_host_seconds=30) as cm:
        root = cm.client()
        register_host(root, "h1")
        [inst] = root.create_instances(vm("r", 1, 128), count=1)
        for name in ("alice", "bob", "carol"):
            root.create_user(name)
        alice, bob, carol = cm.client("alice"), cm.client("bob"), cm.client("carol")
        seqs = iter(range(1, 1000))

        def report() -> object:
            return root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(
                name="h1", reports=[nr.InstanceReport(
                    instance_id=inst.id, state=S.INSTANCE_STATE_HELD,
                    report_seq=next(seqs))]), timeout=30)

        calls = cm.cm.registry.calls
        assert (calls.total, calls.per_caller) == (6, 2)
        with ThreadPoolExecutor(12) as pool:
            with cm.cluster.lock:
                creates = [pool.submit(alice.create_instances, vm(f"a{k}", 1, 128))
                           for k in range(5)]
                others = [pool.submit(report) for _ in range(2)] + [
                    pool.submit(bob.create_instances, vm(f"b{k}", 1, 128)) for k in range(2)]
                wait_for(lambda: calls._in_all == 6, timeout=10,
                         what="six calls admitted, waiting for the lock")
                assert calls.open["alice"] == 2, "alice's burst takes her third, no more"
                with pytest.raises(TashiError) as err:
                    carol.call(carol.cm.CreateInstance, cmpb.CreateInstanceRequest(
                        instance=vm("c", 1, 128)), timeout=1)
                assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert 0 < err.value.retry_after <= 2
                t0 = time.monotonic()
                assert root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name="h1"),
                                 timeout=5).registered
                assert time.monotonic() - t0 < 2
                assert not any(f.done() for f in creates + others)
            made = [f.result(timeout=30)[0] for f in creates]
            assert sorted(i.name for i in made) == [f"a{k}" for k in range(5)], \
                "the refused creates were sent again and made, once each"
            assert all(f.result(timeout=30) for f in others)
        assert calls._in_all == 0 and not calls.open
        names = [i.name for i in root.list_instances()]
        assert sorted(n for n in names if n.startswith("a")) == [f"a{k}" for k in range(5)]


def silence(tmp_path: Path, hosts: int, silent: int) -> tuple[float, bool]:
    """`hosts` hosts up (expiry 2 s), then `silent` of them stop beating while the
    rest beat every 0.3 s: how long until those are all down, and whether the
    rest stayed up."""
    with inproc_cm(tmp_path, expire_host_seconds=2.0) as cm:
        root = cm.client()
        names = [f"m{i}" for i in range(hosts)]
        for name in names:
            register_host(root, name)
        quiet, alive = names[:silent], names[silent:]
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(0.3):
                for name in alive:
                    root.call(root.registry.Heartbeat, nr.HeartbeatRequest(name=name))

        beater = threading.Thread(target=beat, daemon=True)
        t0 = time.monotonic()
        beater.start()
        try:
            wait_for(lambda: not any(h.up for h in root.list_hosts() if h.name in quiet),
                     timeout=20, what="the silent hosts down")
            took = time.monotonic() - t0
            return took, all(h.up for h in root.list_hosts() if h.name in alive)
        finally:
            stop.set()
            beater.join()


def test_a_few_silent_hosts_of_many_go_down_on_time(tmp_path: Path) -> None:
    took, rest_up = silence(tmp_path, 24, 5)
    assert took < 2 + 1.5 and rest_up


def test_most_hosts_silent_at_once_is_taken_as_the_cm_not_hearing_them(
        tmp_path: Path) -> None:
    """14 of 24 hosts silent at once: no host goes down for it for up to twice the
    expiry (nodes.MASS_GRACE, from when most were unheard for half the expiry), then
    they go down all the same (a real mass failure is seen, that much later)."""
    took, rest_up = silence(tmp_path, 24, 14)
    assert 1 + 2 * 2 - 0.5 <= took <= 1 + 2 * 2 + 3, took
    assert rest_up


def test_after_a_mass_silence_the_hosts_still_unheard_get_half_an_expiry(
        tmp_path: Path) -> None:
    """When most hosts are heard again, the beats of the rest may still be queued
    behind theirs: those hosts, which the silence held near the expiry, have half
    an expiry from then to be heard, not the moment left before it."""
    with inproc_cm(tmp_path, expire_host_seconds=2.0) as cm:
        root = cm.client()
        for i in range(24):
            register_host(root, f"m{i}")
        mon, c = cm.cm.liveness, cm.cluster
        mon.stop()
        mon.join(timeout=5)
        ids = sorted(c.host_ids[f"m{i}"] for i in range(24))
        tail, late, heard = ids[:8], ids[8:14], ids[14:]

        def stamp(hosts: list[int], age: float) -> None:
            with c.lock:
                for hid in hosts:
                    c.heartbeats[hid] = time.monotonic() - age

        stamp(tail, 1.95)
        stamp(late, 1.2)
        stamp(heard, 0.0)
        with c.lock:
            assert mon.holding(time.monotonic()), "14 of 24 unheard over half the expiry"
        stamp(late, 0.0)  # most are heard again: the silence ends
        with c.lock:
            assert not mon.holding(time.monotonic())
        with c.lock:
            ages = [time.monotonic() - c.heartbeats[hid] for hid in tail]
        assert all(0.9 < a <= 1.05 for a in ages), ages
        with c.lock:  # 0.2 s pass: the tail would be past the 2 s expiry without it
            for hid in tail:
                c.heartbeats[hid] -= 0.2
        assert nodes.expire_hosts(c) == 0
        assert all(root.get_host(f"m{i}").up for i in range(24))
