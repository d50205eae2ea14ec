"""Usage from scripted lifecycles equals the figures computed by hand
(see `lifecycle_script` for the timeline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tashi.accounting.ledger import Ledger
from tashi.accounting.usage import Figures, GroupBy, UsageRow, usage
from tests.accounting.support import T0, Script, batches, dump_ledger, lifecycle_script

NS = 1_000_000_000
END = (T0 + 600) * NS


def at(t: float) -> int:
    return int((T0 + t) * NS)


def figures(seconds: float, cores: int, memory: int) -> Figures:
    return Figures(seconds, seconds * cores, seconds * memory)


def by_key(rows: list[UsageRow], key: str) -> dict[object, UsageRow]:
    return {getattr(r, key): r for r in rows}


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(str(tmp_path / "ledger.sqlite"))
    led.apply(lifecycle_script().events)
    return led


def test_usage_per_user_matches_hand_computed(ledger: Ledger) -> None:
    rows = by_key(usage(ledger.reader(), start_ns=0, end_ns=END, group_by=GroupBy.USER), "user")
    assert set(rows) == {"alice", "bob", "carol"}
    alice, bob = rows["alice"], rows["bob"]
    # A: 105 + 70 + 145 s at 2 cores / 1024 MiB; D: 101 s at 1 core / 256 MiB.
    assert alice.running == Figures(421, 105 * 2 + 70 * 2 + 145 * 2 + 101,
                                    (105 + 70 + 145) * 1024 + 101 * 256)
    # A paused 125-190, D paused 201-302 (its Destroying keeps the paused phase).
    assert alice.paused == Figures(166, 65 * 2 + 101, 65 * 1024 + 101 * 256)
    assert alice.instance_count == 2  # C never ran
    # B: 50-360 on h2 (the host loss 300-330 was settled by the NM's report), 520-600 on h1.
    assert bob.running == figures(310 + 80, 4, 2048)
    assert bob.paused == Figures()
    # E: billed until its host was lost, as it never came back.
    assert rows["carol"].running == figures(150, 2, 512)


def test_usage_per_instance_and_host(ledger: Ledger) -> None:
    inst = by_key(usage(ledger.reader(), start_ns=0, end_ns=END, group_by=GroupBy.INSTANCE),
                  "instance_id")
    assert set(inst) == {1, 2, 4, 5}
    assert inst[1].running == figures(320, 2, 1024)
    assert (inst[1].user, inst[1].instance_name, inst[1].hosts) == ("alice", "a", ["h1", "h2"])
    assert inst[4].running == figures(101, 1, 256)
    assert inst[4].paused == figures(101, 1, 256)
    hosts = by_key(usage(ledger.reader(), start_ns=0, end_ns=END, group_by=GroupBy.HOST),
                   "host_name")
    h1, h2 = hosts["h1"], hosts["h2"]
    # h1: A 175 s (2 cores), B 80 s (4 cores), D 101 s (1 core); paused A 65 s, D 101 s.
    assert h1.running == Figures(356, 175 * 2 + 80 * 4 + 101,
                                 175 * 1024 + 80 * 2048 + 101 * 256)
    assert h1.paused == Figures(166, 65 * 2 + 101, 65 * 1024 + 101 * 256)
    assert h1.instance_count == 3
    # h2: A 145 s after migrating, B 310 s, E 150 s.
    assert h2.running == Figures(605, 145 * 2 + 310 * 4 + 150 * 2,
                                 145 * 1024 + 310 * 2048 + 150 * 512)
    assert h2.instance_count == 3
    assert h2.paused == Figures()


def test_time_range_clips_intervals(ledger: Ledger) -> None:
    rows = by_key(usage(ledger.reader(), start_ns=at(100), end_ns=at(200),
                        group_by=GroupBy.USER), "user")
    # A runs 100-125 and 190-200, paused 125-190; D runs 100-200; B runs throughout.
    assert rows["alice"].running == Figures(135, 35 * 2 + 100, 35 * 1024 + 100 * 256)
    assert rows["alice"].paused == figures(65, 2, 1024)
    assert rows["bob"].running == figures(100, 4, 2048)
    assert rows["carol"].running == figures(50, 2, 512)
    # While h2 is lost: B is billed (reported again later), E is not (never was), D is gone.
    rows = by_key(usage(ledger.reader(), start_ns=at(305), end_ns=at(325),
                        group_by=GroupBy.USER), "user")
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"].running == figures(20, 2, 1024)
    assert rows["bob"].running == figures(20, 4, 2048)
    one = usage(ledger.reader(), start_ns=at(0), end_ns=END, group_by=GroupBy.USER, user="bob")
    assert [r.user for r in one] == ["bob"]


def test_open_interval_runs_to_the_end_of_the_range(ledger: Ledger) -> None:
    later = usage(ledger.reader(), start_ns=0, end_ns=at(700), group_by=GroupBy.USER, user="bob")
    assert later[0].running.seconds == 310 + 180


def test_batching_and_replays_do_not_change_the_ledger(tmp_path: Path) -> None:
    events = lifecycle_script().events
    whole = Ledger(str(tmp_path / "whole.sqlite"))
    whole.apply(events)
    pieces = Ledger(str(tmp_path / "pieces.sqlite"))
    for size in (1, 3, 7):
        # Overlapping replays, as after a reconnect: already committed events are skipped.
        for chunk in batches(events[: len(events) * size // 7], size):
            pieces.apply(chunk)
    for chunk in batches(events, 5):
        pieces.apply(chunk)
    assert pieces.seq == whole.seq == len(events)
    assert dump_ledger(tmp_path / "pieces.sqlite") == dump_ledger(tmp_path / "whole.sqlite")


def test_reopened_ledger_continues_where_it_left_off(tmp_path: Path) -> None:
    events = lifecycle_script().events
    path = str(tmp_path / "l.sqlite")
    first = Ledger(path)
    first.apply(events[:20])
    first.close()
    second = Ledger(path)
    assert second.seq == 20
    second.apply(events)
    ref = Ledger(str(tmp_path / "ref.sqlite"))
    ref.apply(events)
    assert dump_ledger(path) == dump_ledger(tmp_path / "ref.sqlite")


def test_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    events = lifecycle_script().events
    path = str(tmp_path / "l.sqlite")
    led = Ledger(path)
    led.apply(events[:10])
    before = dump_ledger(path)
    led._conn.execute("CREATE TRIGGER boom BEFORE INSERT ON intervals "
                      "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(Exception, match="disk full"):
        led.apply(events[10:])
    assert dump_ledger(path) == before
    assert led.seq == 10
    led._conn.execute("DROP TRIGGER boom")
    led.apply(events[10:])
    ref = Ledger(str(tmp_path / "ref.sqlite"))
    ref.apply(events)
    assert dump_ledger(path) == dump_ledger(tmp_path / "ref.sqlite")


def test_resize_and_owner_change_split_intervals(tmp_path: Path) -> None:
    s = Script()
    s.host(0, 1, "h1")
    s.create(0, 1, "alice", 1, 512)
    s.change(10, 1, 3, host_id=1)  # Running
    s.change(40, 1, 3, cores=4)
    s.change(50, 1, 16)  # Exited
    led = Ledger(str(tmp_path / "l.sqlite"))
    led.apply(s.events)
    [row] = usage(led.reader(), start_ns=0, end_ns=END, group_by=GroupBy.USER)
    assert row.running == Figures(40, 30 * 1 + 10 * 4, 40 * 512)


def test_sequence_hole_in_the_stream_is_recorded(tmp_path: Path) -> None:
    events = lifecycle_script().events
    led = Ledger(str(tmp_path / "l.sqlite"))
    led.apply(events[:5] + events[8:])
    gaps = led.reader().execute("SELECT seq, kind FROM ledger WHERE kind = 2").fetchall()
    assert len(gaps) == 1
    assert led.seq == len(events)
