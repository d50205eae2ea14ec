"""SIGKILL `tashi-accounting` at random points of a 1,000-event stream from a real
CM, restarting it each time: the ledger ends identical to an uninterrupted run."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tashi.runtime.client import ClusterClient
from tashi.v1 import resources_pb2 as pb
from tests.accounting.support import SyntheticHost, committed_seq, dump_ledger
from tests.harness import free_port, start_accounting, start_cm_at, stop_all, wait_for

S = pb
EVENTS = 1000


def drive(cm_addr: str, rng: random.Random, events: int) -> int:
    """Users create instances; synthetic node managers run, pause and end them."""
    root = ClusterClient(cm_addr)
    for name in ("alice", "bob"):
        root.create_user(name)
    users = [root, ClusterClient(cm_addr, user="alice"), ClusterClient(cm_addr, user="bob")]
    hosts = [SyntheticHost(root, f"h{i}") for i in range(3)]
    where: dict[int, SyntheticHost] = {}
    running: list[int] = []
    paused: list[int] = []
    n = 0
    while root.last_seq() < events:
        action = rng.random()
        if action < 0.4 or not running:
            n += 1
            made = rng.choice(users).create_instances(
                pb.Instance(name=f"vm{n}", spec=pb.InstanceSpec(
                    cores=rng.randint(1, 8), memory_mib=rng.choice([128, 512, 2048]))),
                count=rng.randint(1, 4))
            host = rng.choice(hosts)
            host.report([(i.id, S.INSTANCE_STATE_RUNNING) for i in made])
            for inst in made:
                where[inst.id] = host
                running.append(inst.id)
        elif action < 0.7:
            iid = running.pop(rng.randrange(len(running)))
            where[iid].report([(iid, S.INSTANCE_STATE_PAUSED)])
            paused.append(iid)
        else:
            pool = paused if paused and rng.random() < 0.5 else running
            iid = pool.pop(rng.randrange(len(pool)))
            where[iid].report([(iid, S.INSTANCE_STATE_EXITED)])
    top = root.last_seq()
    for c in users:
        c.close()
    return top


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_the_ledger_of_an_uninterrupted_run(
        tmp_path: Path) -> None:
    rng = random.Random(20240501)
    port = free_port()
    cm_addr = f"127.0.0.1:{port}"
    cm = start_cm_at(tmp_path, port, expire_host_seconds=3600)
    try:
        top = drive(cm_addr, rng, EVENTS)
        assert top >= EVENTS

        ref_db = tmp_path / "reference.sqlite"
        ref = start_accounting(tmp_path, cm_addr, db=ref_db)
        wait_for(lambda: committed_seq(ref_db) == top, timeout=60)
        stop_all(ref)

        db = tmp_path / "killed.sqlite"
        # Small batches: many transactions, so kills land inside and between them.
        extra = ("--watch-batch", "7", "--commit-events", "7")
        kills = 0
        thresholds = sorted(rng.sample(range(1, top), 20))
        for threshold in thresholds:
            acc = start_accounting(tmp_path, cm_addr, *extra, db=db)
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.3))  # also while starting or connecting
            else:
                wait_for(lambda t=threshold: committed_seq(db) >= t, timeout=60,  # type: ignore[misc]
                         interval=0.001)
            stop_all(acc, kill=True)
            kills += 1
            assert committed_seq(db) <= top
        seqs_after_kills = committed_seq(db)
        acc = start_accounting(tmp_path, cm_addr, *extra, db=db)
        wait_for(lambda: committed_seq(db) == top, timeout=60)
        stop_all(acc)
        assert kills == 20 and 0 < seqs_after_kills <= top
        assert dump_ledger(db) == dump_ledger(ref_db)
        assert len(dump_ledger(db)["ledger"]) == top  # every event once, no gap record
    finally:
        stop_all(cm)
