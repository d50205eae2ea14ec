"""`tashi-accounting` against a real `tashi-cm`: started before the CM, through a
CM restart, past the CM's event retention, and the periodic reconcile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.runtime.accounting_client import AccountingClient
from tashi.runtime.client import ClusterClient
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import resources_pb2 as pb
from tests.accounting.support import SyntheticHost, cm_history, committed_seq, sized
from tests.harness import (
    NMProcess,
    Process,
    free_port,
    start_accounting,
    start_cm,
    start_cm_at,
    stop_all,
    wait_for,
)

S = pb
NS = 1_000_000_000


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    stop_all(*reversed(started))


def ledger_entries(address: str, **filters: object) -> list[apb.LedgerEntry]:
    with AccountingClient(address, user="root") as client:
        return list(client.list_events(apb.ListEventsRequest(**filters)))  # type: ignore[arg-type]


def caught_up(db: Path, client: ClusterClient) -> bool:
    return committed_seq(db) == client.last_seq()


def by_seq(events: list[pb.Event]) -> dict[int, pb.Event]:
    return {e.seq: e for e in events}


def event_ns(events: list[pb.Event], iid: int, state: int | None,
             etype: int = S.EVENT_TYPE_INSTANCE_UPDATED) -> int:
    """Time of the first event of `etype` about instance `iid` (in `state`, if given)."""
    for e in events:
        if e.type == etype and e.instance.id == iid and state in (None, e.instance.status.state):
            return e.time.seconds * NS + e.time.nanos
    raise AssertionError(f"no event for instance {iid} in state {state}")


def instance_usage(address: str, start_ns: int, end_ns: int) -> dict[int, apb.UsageRecord]:
    from tashi.accounting.timeutil import ns_to_ts

    with AccountingClient(address, user="root") as client:
        resp = client.get_usage(start=ns_to_ts(start_ns), end=ns_to_ts(end_ns),
                                group_by="instance")
    return {r.instance_id: r for r in resp.records}


def test_waits_for_the_cm_and_a_cm_restart_changes_nothing(tmp_path: Path,
                                                            procs: list[Process]) -> None:
    port = free_port()
    cm_addr = f"127.0.0.1:{port}"
    db = tmp_path / "ledger.sqlite"
    acc = start_accounting(tmp_path, cm_addr, "--reconcile-seconds", "0.3")
    procs.append(acc)
    wait_for(lambda: "waiting for the cluster manager" in acc.log_path.read_text())

    cm = start_cm_at(tmp_path, port, expire_host_seconds=3600)
    client = ClusterClient(cm_addr)
    client.create_user("alice")
    client.create_user("bob")
    h1 = SyntheticHost(client, "h1")
    with ClusterClient(cm_addr, user="alice") as alice:
        a = alice.create_instances(sized("a", 2, 512))[0]
    b = client.create_instances(sized("b", 1, 256))[0]
    h1.report([(a.id, S.INSTANCE_STATE_RUNNING), (b.id, S.INSTANCE_STATE_RUNNING)])
    h1.report([(b.id, S.INSTANCE_STATE_PAUSED)])
    wait_for(lambda: caught_up(db, client))

    # The CM dies and comes back: its instances are Orphaned until the host registers.
    stop_all(cm, kill=True)
    cm = start_cm_at(tmp_path, port, expire_host_seconds=3600)
    procs.append(cm)
    client.close()
    client = ClusterClient(cm_addr)
    h1.client = client
    h1.register()
    h1.report([(a.id, S.INSTANCE_STATE_EXITED)])
    c = client.create_instances(sized("c", 4, 1024))[0]
    h1.report([(c.id, S.INSTANCE_STATE_RUNNING)])
    wait_for(lambda: caught_up(db, client))

    history = cm_history(client)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert any(e.instance.status.state == S.INSTANCE_STATE_ORPHANED for e in history)
    entries = ledger_entries(acc.address)
    # Every event exactly once, as the CM recorded it; no gap, no drift.
    assert [e.event for e in entries] == history
    assert all(e.kind == apb.LEDGER_ENTRY_KIND_EVENT for e in entries)
    log = acc.log_path.read_text()
    assert log.count("connected to the cluster manager") >= 2

    # Usage runs through the restart as if it never happened.
    end = history[-1].time.seconds * NS + history[-1].time.nanos
    usage = instance_usage(acc.address, 0, end)
    a_run = event_ns(history, a.id, S.INSTANCE_STATE_RUNNING)
    a_gone = event_ns(history, a.id, None, S.EVENT_TYPE_INSTANCE_DELETED)
    assert usage[a.id].running.seconds == pytest.approx((a_gone - a_run) / NS, abs=1e-6)
    assert usage[a.id].running.core_seconds == pytest.approx(2 * (a_gone - a_run) / NS, abs=1e-6)
    b_run = event_ns(history, b.id, S.INSTANCE_STATE_RUNNING)
    b_paused = event_ns(history, b.id, S.INSTANCE_STATE_PAUSED)
    assert usage[b.id].running.seconds == pytest.approx((b_paused - b_run) / NS, abs=1e-6)
    assert usage[b.id].paused.seconds == pytest.approx((end - b_paused) / NS, abs=1e-6)
    assert usage[b.id].user == "root" and usage[a.id].user == "alice"
    assert list(usage[a.id].hosts) == ["h1"]
    # The reconcile ran against the live CM meanwhile and found nothing to correct.
    wait_for(lambda: "reconcile: 0 drift(s)" in acc.log_path.read_text())
    assert ledger_entries(acc.address, kinds=[apb.LEDGER_ENTRY_KIND_DRIFT]) == []
    client.close()


@pytest.mark.slow
def test_out_of_range_records_a_gap_and_recovers(tmp_path: Path, procs: list[Process]) -> None:
    port = free_port()
    cm_addr = f"127.0.0.1:{port}"
    db = tmp_path / "ledger.sqlite"
    cm = start_cm_at(tmp_path, port, expire_host_seconds=3600, event_retention=100)
    procs.append(cm)
    client = ClusterClient(cm_addr)
    h1 = SyntheticHost(client, "h1")
    a, b = client.create_instances(sized("ab", 1, 128), count=2)
    h1.report([(a.id, S.INSTANCE_STATE_RUNNING), (b.id, S.INSTANCE_STATE_RUNNING)])
    acc = start_accounting(tmp_path, cm_addr)
    wait_for(lambda: caught_up(db, client))
    stop_all(acc, kill=True)
    seen = committed_seq(db)

    # While accounting is away: a pauses, b exits, and enough happens (the CM
    # prunes every 1,000 commits) that its history no longer reaches back.
    h1.report([(a.id, S.INSTANCE_STATE_PAUSED), (b.id, S.INSTANCE_STATE_EXITED)])
    for i in range(1000):
        client.create_instances(sized(f"filler{i}", 1, 64))
    with pytest.raises(Exception, match="OUT_OF_RANGE"):
        next(iter(client.watch_events(seen)))

    acc = start_accounting(tmp_path, cm_addr)
    procs.append(acc)
    wait_for(lambda: caught_up(db, client), timeout=30)
    [gap] = ledger_entries(acc.address, kinds=[apb.LEDGER_ENTRY_KIND_GAP])
    assert gap.gap.after_seq == seen and gap.gap.resume_seq > seen + 1000
    assert "no longer retained" in gap.gap.reason
    # It recovered: new events flow into the ledger after the gap.
    h1.report([(a.id, S.INSTANCE_STATE_EXITED)])
    wait_for(lambda: caught_up(db, client))
    last = ledger_entries(acc.address, instance_id=a.id)[-1]
    assert last.event.type == S.EVENT_TYPE_INSTANCE_DELETED

    # The gap is booked at the relist: a ran until then, b until then, then a paused.
    relist = gap.gap.end_time.seconds * NS + gap.gap.end_time.nanos
    gone = last.event.time.seconds * NS + last.event.time.nanos
    usage = instance_usage(acc.address, 0, gone)
    assert usage[b.id].paused.seconds == 0
    assert usage[a.id].paused.seconds == pytest.approx((gone - relist) / NS, abs=1e-6)
    assert usage[a.id].running.seconds == pytest.approx(usage[b.id].running.seconds, abs=1e-6)
    with AccountingClient(acc.address, user="root") as ac:
        assert len(ac.get_usage().gaps) == 1
    client.close()


@pytest.mark.slow
def test_lifecycle_through_real_node_managers(tmp_path: Path, procs: list[Process]) -> None:
    """create, run, pause, unpause, destroy on `tashi-nm` (libvirt test driver), and a
    host lost for good; usage equals the intervals between the CM's own event times."""
    from tashi.v1 import placement_pb2 as pl

    cm = start_cm(tmp_path, expire_host_seconds=2)
    procs.append(cm)
    client = cm.client()
    acc = start_accounting(tmp_path, cm.address)
    procs.append(acc)
    db = tmp_path / "ledger.sqlite"
    for name in ("h1", "h2"):
        client.create_host(name)
    nm1 = NMProcess(tmp_path / "h1", cm.address, "h1", cores=4, memory_mib=4096,
                    heartbeat_seconds=0.3)
    procs.append(nm1)
    nm2 = NMProcess(tmp_path / "h2", cm.address, "h2", cores=4, memory_mib=4096,
                    heartbeat_seconds=0.3)
    hosts = {h.name: wait_for(lambda n=h.name: (x := client.get_host(n)).up and x)  # type: ignore[misc]
             for h in client.list_hosts()}

    def state(iid: int) -> int:
        return next((i.status.state for i in client.list_instances() if i.id == iid), -1)

    def run_on(inst: pb.Instance, host: str) -> None:
        res = client.activate([pl.Placement(instance_id=inst.id, host_id=hosts[host].id)])
        assert res.results[0].accepted, res.results[0].reason
        wait_for(lambda: state(inst.id) == S.INSTANCE_STATE_RUNNING)

    x = client.create_instances(sized("x", 2, 256))[0]
    y = client.create_instances(sized("y", 1, 128))[0]
    run_on(x, "h1")
    run_on(y, "h2")
    client.instance_action("Pause", x.id)
    wait_for(lambda: state(x.id) == S.INSTANCE_STATE_PAUSED)
    client.instance_action("Unpause", x.id)
    wait_for(lambda: state(x.id) == S.INSTANCE_STATE_RUNNING)
    nm2.kill()  # h2 is lost with y on it
    wait_for(lambda: state(y.id) == S.INSTANCE_STATE_ORPHANED, timeout=10)
    client.instance_action("Delete", x.id)
    wait_for(lambda: state(x.id) == -1)
    # h2's NM comes back without y (its test-driver VMs died with it): y is removed.
    nm2 = NMProcess(tmp_path / "h2", cm.address, "h2", cores=4, memory_mib=4096,
                    heartbeat_seconds=0.3)
    procs.append(nm2)
    wait_for(lambda: state(y.id) == -1)
    wait_for(lambda: caught_up(db, client))

    history = cm_history(client)
    assert [e.event for e in ledger_entries(acc.address)] == history
    end = history[-1].time.seconds * NS + history[-1].time.nanos
    usage = instance_usage(acc.address, 0, end + 10 * NS)
    x_runs = [e.time.seconds * NS + e.time.nanos for e in history
              if e.instance.id == x.id and e.instance.status.state == S.INSTANCE_STATE_RUNNING]
    x_paused = event_ns(history, x.id, S.INSTANCE_STATE_PAUSED)
    x_gone = event_ns(history, x.id, None, S.EVENT_TYPE_INSTANCE_DELETED)
    assert len(x_runs) == 2
    want_running = (x_paused - x_runs[0]) + (x_gone - x_runs[1])
    assert usage[x.id].running.seconds == pytest.approx(want_running / NS, abs=1e-6)
    assert usage[x.id].running.core_seconds == pytest.approx(2 * want_running / NS, abs=1e-6)
    assert usage[x.id].paused.seconds == pytest.approx((x_runs[1] - x_paused) / NS, abs=1e-6)
    assert usage[x.id].paused.memory_mib_seconds == pytest.approx(
        256 * (x_runs[1] - x_paused) / NS, abs=1e-3)
    y_run = event_ns(history, y.id, S.INSTANCE_STATE_RUNNING)
    y_lost = event_ns(history, y.id, S.INSTANCE_STATE_ORPHANED)
    assert usage[y.id].running.seconds == pytest.approx((y_lost - y_run) / NS, abs=1e-6)
    assert (list(usage[x.id].hosts), list(usage[y.id].hosts)) == (["h1"], ["h2"])
    client.close()
