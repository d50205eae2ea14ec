"""The fast usage path (curves and spans) agrees with reading every interval, on
random streams: orphans found again or not, migrations, resizes, a CM clock
stepping back, replays in random batches, and random time ranges."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tashi.accounting.curves import HOST, USER
from tashi.accounting.ledger import Ledger
from tashi.accounting.usage import GroupBy, UsageRow, usage, usage_from_curves, usage_scan
from tashi.v1 import resources_pb2 as pb
from tests.accounting.support import T0, Script, batches

S = pb
NS = 1_000_000_000
STATES = [S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED, S.INSTANCE_STATE_PAUSING,
          S.INSTANCE_STATE_UNPAUSING, S.INSTANCE_STATE_SUSPENDING, S.INSTANCE_STATE_SUSPENDED,
          S.INSTANCE_STATE_ORPHANED, S.INSTANCE_STATE_DESTROYING, S.INSTANCE_STATE_PENDING,
          S.INSTANCE_STATE_MIGRATE_TRANS, S.INSTANCE_STATE_HELD]


def random_script(rng: random.Random, n: int) -> Script:
    s = Script()
    for h in (1, 2, 3):
        s.host(0, h, f"h{h}")
    t = 0.0
    next_id = 1
    while len(s.events) < n:
        # Mostly forward in time, sometimes several changes at once, sometimes back.
        t += rng.choice([0, 1, 3, 7.5, 20]) if rng.random() > 0.03 else -rng.uniform(1, 30)
        if not s.instances or rng.random() < 0.15:
            s.create(t, next_id, rng.choice(["ann", "ben", "cy"]), rng.randint(1, 4),
                     rng.choice([128, 256]))
            next_id += 1
            continue
        iid = rng.choice(sorted(s.instances))
        roll = rng.random()
        if roll < 0.08:
            s.delete(t, iid)
        elif roll < 0.15:
            s.change(t, iid, S.INSTANCE_STATE_RUNNING, host_id=rng.randint(1, 3))
        elif roll < 0.18:
            s.change(t, iid, s.instances[iid].status.state, cores=rng.randint(1, 4))
        else:
            state = rng.choice(STATES)
            host = s.instances[iid].status.host_id or rng.randint(1, 3)
            s.change(t, iid, state, host_id=0 if state in (
                S.INSTANCE_STATE_SUSPENDED, S.INSTANCE_STATE_PENDING,
                S.INSTANCE_STATE_HELD) else host)
    return s


def key(row: UsageRow) -> tuple[str, int]:
    return (row.user, row.host_id)


def assert_same(fast: list[UsageRow], slow: list[UsageRow]) -> None:
    assert [key(r) for r in fast] == [key(r) for r in slow]
    for f, s in zip(fast, slow, strict=True):
        assert f.instance_count == s.instance_count, (key(f), f, s)
        for a, b in ((f.running, s.running), (f.paused, s.paused)):
            assert a.seconds == pytest.approx(b.seconds, rel=1e-9, abs=1e-6)
            assert a.core_seconds == pytest.approx(b.core_seconds, rel=1e-9, abs=1e-6)
            assert a.memory_mib_seconds == pytest.approx(b.memory_mib_seconds, rel=1e-9,
                                                         abs=1e-4)


@pytest.mark.parametrize("seed", range(12))
def test_curves_agree_with_the_intervals(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    script = random_script(rng, 400)
    led = Ledger(str(tmp_path / "l.sqlite"))
    events = script.events
    i = 0
    while i < len(events):
        size = rng.randint(1, 40)
        led.apply(events[max(0, i - rng.randint(0, 5)):i + size])  # with replays
        i += size
    if seed % 3 == 0:  # and a restart, reloading the caches from the file
        led.close()
        led = Ledger(str(tmp_path / "l.sqlite"))
    conn = led.reader()
    span = max(ev.time.seconds for ev in events) - T0 + 60
    ranges = [(0, span)] + [tuple(sorted(rng.uniform(-10, span) for _ in range(2)))
                            for _ in range(15)]
    for lo, hi in ranges:
        s, e = int((T0 + lo) * NS), int((T0 + hi) * NS)
        assert_same(usage_from_curves(conn, start_ns=s, end_ns=e, kind=USER),
                    usage_scan(conn, start_ns=s, end_ns=e, group_by=GroupBy.USER))
        assert_same(usage_from_curves(conn, start_ns=s, end_ns=e, kind=HOST),
                    usage_scan(conn, start_ns=s, end_ns=e, group_by=GroupBy.HOST))
        assert_same(usage(conn, start_ns=s, end_ns=e, group_by=GroupBy.USER, user="ben"),
                    usage_scan(conn, start_ns=s, end_ns=e, group_by=GroupBy.USER, user="ben"))


def test_orphan_found_again_in_a_later_batch_rewrites_the_past(tmp_path: Path) -> None:
    """The reopen steps back over points written after the instance was orphaned."""
    s = Script()
    s.host(0, 1, "h1")
    s.create(0, 1, "ann", 2, 128)
    s.create(0, 2, "ann", 1, 128)
    s.change(10, 1, S.INSTANCE_STATE_RUNNING, host_id=1)
    s.change(20, 1, S.INSTANCE_STATE_ORPHANED)
    s.change(30, 2, S.INSTANCE_STATE_RUNNING, host_id=1)  # a point after the orphaning
    s.change(40, 2, S.INSTANCE_STATE_PAUSED)
    s.change(50, 1, S.INSTANCE_STATE_RUNNING)  # found running all along
    led = Ledger(str(tmp_path / "l.sqlite"))
    for ev in s.events:
        led.apply([ev])
    [row] = usage(led.reader(), start_ns=0, end_ns=int((T0 + 100) * NS), group_by=GroupBy.USER)
    assert row.running.core_seconds == 90 * 2 + 10 * 1
    assert row.paused.seconds == 60
    [mid] = usage(led.reader(), start_ns=int((T0 + 25) * NS), end_ns=int((T0 + 35) * NS),
                  group_by=GroupBy.USER)
    assert mid.running.core_seconds == 10 * 2 + 5 * 1 and mid.instance_count == 2


def test_batches_do_not_matter_to_the_curves(tmp_path: Path) -> None:
    script = random_script(random.Random(99), 300)
    one = Ledger(str(tmp_path / "one.sqlite"))
    one.apply(script.events)
    many = Ledger(str(tmp_path / "many.sqlite"))
    for chunk in batches(script.events, 7):
        many.apply(chunk)
    for table in ("curve_points", "spans", "breaks"):
        q = f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4"
        assert one.reader().execute(q).fetchall() == many.reader().execute(q).fetchall()
