"""Relisting after a gap in the history, and the periodic reconcile (ledger level)."""

from __future__ import annotations

from pathlib import Path

from tashi.accounting.ledger import KIND_DRIFT, KIND_GAP, Ledger
from tashi.accounting.listing import EntryFilter, list_entries
from tashi.accounting.usage import Figures, GroupBy, UsageRow, usage
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import resources_pb2 as pb
from tests.accounting.support import T0, Script, lifecycle_script

NS = 1_000_000_000
S = pb


def at(t: float) -> int:
    return int((T0 + t) * NS)


def users(led: Ledger, start: float, end: float) -> dict[str, UsageRow]:
    rows = usage(led.reader(), start_ns=at(start), end_ns=at(end), group_by=GroupBy.USER)
    return {r.user: r for r in rows}


def test_relist_records_the_gap_and_books_changes_at_the_listing(tmp_path: Path) -> None:
    s = Script()
    s.host(0, 1, "h1")
    for iid, owner, cores in ((1, "alice", 1), (2, "bob", 2), (3, "dave", 1)):
        s.create(0, iid, owner, cores, 256)
    s.change(10, 1, S.INSTANCE_STATE_RUNNING, host_id=1)
    s.change(10, 2, S.INSTANCE_STATE_RUNNING, host_id=1)
    seen = len(s.events)
    # Events the ledger never receives (the CM's retention dropped them).
    s.change(50, 1, S.INSTANCE_STATE_PAUSED)
    s.delete(60, 2)
    s.change(70, 3, S.INSTANCE_STATE_RUNNING, host_id=1)
    s.create(80, 4, "carol", 4, 256)
    s.change(80, 4, S.INSTANCE_STATE_RUNNING, host_id=1)
    missed = len(s.events)
    listing = list(s.instances.values())
    s.change(120, 1, S.INSTANCE_STATE_RUNNING)

    led = Ledger(str(tmp_path / "l.sqlite"))
    led.apply(s.events[:seen])
    gap = led.relist(listing, missed, at(100), "history expired")
    assert (gap.after_seq, gap.resume_seq) == (seen, missed)
    led.apply(s.events)  # the stream resumes after `missed`
    assert led.seq == len(s.events)

    got = users(led, 0, 200)
    # alice: ran 10-100 (the pause is booked at the listing), paused 100-120, ran 120-200.
    assert got["alice"].running == Figures(170, 170, 170 * 256)
    assert got["alice"].paused == Figures(20, 20, 20 * 256)
    # bob's instance was gone at the listing: billed until then.
    assert got["bob"].running == Figures(90, 180, 90 * 256)
    assert got["dave"].running.seconds == 100
    assert got["carol"].running.core_seconds == 400

    rows, _ = list_entries(led.reader(), EntryFilter(kinds=[KIND_GAP]), 0, 10)
    [entry] = rows
    recorded = apb.LedgerGap.FromString(entry.body)
    assert recorded == gap
    assert recorded.start_time.seconds == T0 + 10 and recorded.end_time.seconds == T0 + 100


def test_reconcile_finds_nothing_when_the_ledger_agrees(tmp_path: Path) -> None:
    s = lifecycle_script()
    led = Ledger(str(tmp_path / "l.sqlite"))
    led.apply(s.events)
    assert led.reconcile(list(s.instances.values()), led.seq, at(700)) == []
    rows, _ = list_entries(led.reader(), EntryFilter(kinds=[KIND_DRIFT]), 0, 10)
    assert rows == []


def test_reconcile_records_and_corrects_drift(tmp_path: Path) -> None:
    s = Script()
    s.host(0, 1, "h1")
    s.create(0, 1, "alice", 1, 256)
    s.change(10, 1, S.INSTANCE_STATE_RUNNING, host_id=1)
    s.create(0, 2, "bob", 2, 256)
    s.change(10, 2, S.INSTANCE_STATE_RUNNING, host_id=1)
    s.create(0, 3, "carol", 1, 256)
    led = Ledger(str(tmp_path / "l.sqlite"))
    led.apply(s.events)
    list_seq = led.seq
    cm_view = {iid: pb.Instance() for iid in s.instances}
    for iid, inst in s.instances.items():
        cm_view[iid].CopyFrom(inst)
    cm_view[1].status.state = S.INSTANCE_STATE_PAUSED  # changed without an event
    del cm_view[2]  # gone without an event
    cm_view[9] = pb.Instance(id=9, owner="dave", name="ghost",
                             spec=pb.InstanceSpec(cores=1, memory_mib=128),
                             status=pb.InstanceStatus(state=S.INSTANCE_STATE_RUNNING,
                                                      host_id=1, host_name="h1"))
    # carol's instance changes after the listing: not compared.
    s.change(20, 3, S.INSTANCE_STATE_RUNNING, host_id=1)
    led.apply(s.events)

    drifts = led.reconcile(list(cm_view.values()), list_seq, at(100))
    assert sorted(d.instance_id for d in drifts) == [1, 2, 9]
    by_id = {d.instance_id: d for d in drifts}
    assert by_id[1].ledger.status.state == S.INSTANCE_STATE_RUNNING
    assert by_id[1].cluster.status.state == S.INSTANCE_STATE_PAUSED
    assert not by_id[2].HasField("cluster") and by_id[9].ledger.id == 0
    rows, _ = list_entries(led.reader(), EntryFilter(kinds=[KIND_DRIFT]), 0, 10)
    assert len(rows) == 3
    # Corrected as of the reconcile: a second one finds nothing.
    assert led.reconcile(list(cm_view.values()) + [s.instances[3]], led.seq, at(101)) == []
    got = users(led, 0, 200)
    assert got["alice"].running.seconds == 90
    assert got["alice"].paused.seconds == 100
    assert got["bob"].running.seconds == 90
    assert got["dave"].running.seconds == 100
    assert got["carol"].running.seconds == 180


def test_orphan_reported_in_another_phase_stays_ended(tmp_path: Path) -> None:
    s = Script()
    s.host(0, 1, "h1")
    s.create(0, 1, "alice", 1, 256)
    s.change(10, 1, S.INSTANCE_STATE_RUNNING, host_id=1)
    s.change(40, 1, S.INSTANCE_STATE_ORPHANED)
    s.change(60, 1, S.INSTANCE_STATE_PAUSED)
    led = Ledger(str(tmp_path / "l.sqlite"))
    led.apply(s.events)
    got = users(led, 0, 100)
    assert got["alice"].running.seconds == 30
    assert got["alice"].paused.seconds == 40
