"""The event log's index for filtered watches returns exactly what a scan of
every event through the filter returns: from the tail, from the store behind
it, and across the tail's trimming."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tashi.cm.eventlog import EventLog
from tashi.cm.store import Batch
from tashi.cm.watch import KIND_FIELD, WatchFilter
from tashi.v1 import resources_pb2 as pb
from tests.harness import open_test_store

KINDS = sorted(KIND_FIELD.values())


def random_event(rng: random.Random, seq: int) -> pb.Event:
    kind = rng.choice(KINDS)
    event = pb.Event(seq=seq)
    if kind == "host":
        h = rng.randint(1, 5)
        event.host.id = h
        event.host_ids.append(h)
    elif kind == "instance":
        event.instance.id = rng.randint(1, 50)
        event.host_ids.extend(sorted(rng.sample(range(1, 6), rng.randint(0, 2))))
    elif kind == "network":
        event.network.id = rng.randint(1, 3)
    else:
        event.user.id = rng.randint(1, 3)
    return event


def drain(log: EventLog, flt: WatchFilter, since: int, limit: int) -> list[int]:
    keys = flt.index_keys()
    assert keys is not None
    got: list[int] = []
    while since < log.last_seq:
        events, read_to = log.read_matching(since, limit, 0.0, keys, flt.passes)
        assert read_to > since, "every read moves on"
        assert all(since < e.seq <= read_to for e in events)
        got.extend(e.seq for e in events)
        since = read_to
    return got


@pytest.mark.parametrize("seed", range(6))
def test_index_equals_scan(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = open_test_store(tmp_path)
    try:
        log = EventLog(store, 1, 0, [], retention=10_000, memory=120)
        events: list[pb.Event] = []
        seq = 0
        for _ in range(40):  # commits of 1..12 events: the tail (120) trims as it goes
            batch = []
            for _ in range(rng.randint(1, 12)):
                seq += 1
                batch.append(random_event(rng, seq))
            store.commit(Batch(events=[(e.seq, e.SerializeToString()) for e in batch]))
            log.publish(batch)
            events.extend(batch)
        filters = [WatchFilter(frozenset(rng.sample(KINDS, rng.randint(0, 4))),
                               host_id=rng.choice([0, 1, 3, 5])) for _ in range(12)]
        low = seq - 120 + 1  # the oldest event the tail still holds
        for flt in filters:
            for since in (0, seq // 3, *range(low - 3, low + 8), seq - 60, seq - 1):
                since = max(0, since)
                want = [e.seq for e in events if e.seq > since and flt.passes(e)]
                for limit in (1, 7, 1000):
                    assert drain(log, flt, since, limit) == want, (flt, since, limit)
    finally:
        store.close()


def test_a_host_named_before_it_exists_scans() -> None:
    assert WatchFilter(frozenset(), host_name="later").index_keys() is None
    assert WatchFilter(frozenset({"network"}), host_id=4).index_keys() == [("network",)]
    assert WatchFilter(frozenset({"instance", "network"}), host_id=4).index_keys() == [
        ("instance", 4), ("network",)]
