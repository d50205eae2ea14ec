"""Group commit (cm/commits.py): changes that queue for the cluster's lock are
made in one turn and stored in one transaction; each caller still gets its own
answer, and a turn the store refuses leaves memory as the store has it."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tashi.cm import admin, commits, instances, tokens
from tashi.cm.cluster import Cluster
from tashi.cm.config import CMConfig
from tashi.cm.store import Batch
from tashi.runtime.errors import ServiceError
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import db_url, open_test_store

CALLERS = 40


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    store = open_test_store(tmp_path)
    c = Cluster(CMConfig(db=db_url(tmp_path), admins=["alice", "u0", "u1", "u2"]), store)
    c.recover()
    yield c
    store.close()


def create(c: Cluster, name: str, request_id: str = "", user: str = "alice"
           ) -> cmpb.CreateInstanceResponse:
    return instances.create(c, user, cmpb.CreateInstanceRequest(
        request_id=request_id,
        instance=pb.Instance(name=name, spec=pb.InstanceSpec(cores=1, memory_mib=64))))


def queued_together(c: Cluster, calls: list[Callable[[], object]]) -> list[object]:
    """Run `calls` in threads that all queue while the test holds the lock, so
    they are made in as few turns as the group size allows; their outcomes
    (answers or exceptions), in order."""
    out: list[object] = [None] * len(calls)

    def run(k: int) -> None:
        try:
            out[k] = calls[k]()
        except Exception as exc:
            out[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    with c.lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while c.combiner.queued() < len(calls) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.combiner.queued() == len(calls), "every call queued for the lock"
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    return out


def counting_commits(c: Cluster, monkeypatch: pytest.MonkeyPatch) -> list[Batch]:
    batches: list[Batch] = []
    real = c.store.commit

    def commit(batch: Batch) -> None:
        real(batch)
        batches.append(batch)

    monkeypatch.setattr(c.store, "commit", commit)
    return batches


def memory_is_the_store(c: Cluster) -> None:
    loaded = c.store.load(recent=0)
    stored = {i.id: i for i in map(pb.Instance.FromString, loaded.resources["instance"])}
    assert c.instances == stored
    assert set(c.instance_ids) == {i.name for i in stored.values()}
    owned = {i.owner for i in stored.values()}
    for user, use in c.owned.items():
        mine = [i for i in stored.values() if i.owner == user]
        assert (use.count, use.cores) == (len(mine), sum(i.spec.cores for i in mine)), user
    assert owned <= set(c.owned)
    assert c.meta.get("next_instance_id") == loaded.meta.get("next_instance_id")
    assert c.request_ids == c.store.request_ids()
    top = loaded.last_seq
    assert c.events.last_seq == top


def test_queued_changes_are_made_in_one_turn_and_one_transaction(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = counting_commits(cluster, monkeypatch)
    seq = cluster.events.last_seq
    out = queued_together(cluster, [lambda k=k: create(cluster, f"vm{k}", f"r{k}")  # type: ignore[misc]
                                    for k in range(CALLERS)])
    assert all(isinstance(o, cmpb.CreateInstanceResponse) for o in out), out
    ids = [o.instances[0].id for o in out]  # type: ignore[union-attr]
    names = [o.instances[0].name for o in out]  # type: ignore[union-attr]
    assert names == [f"vm{k}" for k in range(CALLERS)], "each caller got its own answer"
    assert len(set(ids)) == CALLERS
    assert len(batches) == 1, f"{len(batches)} store transactions for one turn"
    assert len(batches[0].requests) == CALLERS and len(batches[0].events) == CALLERS
    events = cluster.events.read_after(seq, 1000, 0.0)
    assert [e.seq for e in events] == list(range(seq + 1, seq + CALLERS + 1)), "no gap"
    memory_is_the_store(cluster)
    # A repeat of one of them answers as the first time, from the store now.
    again = create(cluster, "vm3", "r3")
    assert again.instances[0].id == ids[3]


def test_a_change_sees_the_changes_made_before_it_in_its_turn(cluster: Cluster) -> None:
    out = queued_together(cluster, [
        lambda: create(cluster, "same"), lambda: create(cluster, "same"),
        lambda: create(cluster, "other", "rid"), lambda: create(cluster, "other", "rid"),
        lambda: create(cluster, "third")])
    first, second, other, repeat, third = out
    assert isinstance(first, cmpb.CreateInstanceResponse)
    assert isinstance(second, ServiceError) and second.code == grpc.StatusCode.ALREADY_EXISTS
    assert isinstance(other, cmpb.CreateInstanceResponse)
    assert repeat == other, "a repeat of a request id in the same turn gets the first answer"
    assert isinstance(third, cmpb.CreateInstanceResponse), "a refusal fails no other change"
    assert sorted(cluster.instance_ids) == ["other", "same", "third"]
    memory_is_the_store(cluster)


def test_a_turn_the_store_refuses_fails_every_change_of_it_and_leaves_memory_as_the_store(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    [kept] = create(cluster, "kept", "k").instances
    real = cluster.store.commit

    def full(batch: Batch) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cluster.store, "commit", full)
    calls: list[Callable[[], object]] = [
        lambda k=k: create(cluster, f"lost{k}", f"r{k}", user=f"u{k % 3}")  # type: ignore[misc]
        for k in range(CALLERS)]
    calls.append(lambda: instances.destroy(cluster, "alice", cmpb.DeleteInstanceRequest(
        instance=cmpb.InstanceRef(id=kept.id))))
    calls.append(lambda: admin.create_user(cluster, "alice", cmpb.CreateUserRequest(name="bo")))
    calls.append(lambda: tokens.issue(cluster, "alice", cmpb.IssueTokenRequest(user="u1")))
    users, toks = dict(cluster.users), dict(cluster.tokens)
    out = queued_together(cluster, calls)
    assert all(isinstance(o, ServiceError) and o.code == grpc.StatusCode.UNAVAILABLE
               and "cannot write" in o.message for o in out), out
    assert "kept" in cluster.instance_ids and not any(
        n.startswith("lost") for n in cluster.instance_ids)
    memory_is_the_store(cluster)
    assert (cluster.users, cluster.tokens) == (users, toks) and "bo" not in cluster.user_ids
    monkeypatch.setattr(cluster.store, "commit", real)
    [later] = create(cluster, "later", "r0", user="u0").instances
    assert later.id == kept.id + 1, "ids given out in the refused turn are given again"
    memory_is_the_store(cluster)


def test_a_change_made_by_a_thread_that_holds_the_lock_is_made_at_once(
        cluster: Cluster) -> None:
    with cluster.lock:
        [inst] = create(cluster, "inside").instances
        assert cluster.instances[inst.id].name == "inside"
    memory_is_the_store(cluster)

    def body(txn: object) -> None:
        # Nested: a change inside another's turn joins it.
        create(cluster, "nested")

    cluster.write("test", body)  # type: ignore[arg-type]
    assert "nested" in cluster.instance_ids
    memory_is_the_store(cluster)


def test_a_call_goes_before_the_cms_own_changes_and_turns_are_short(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten of the CM's own changes of 20 ms each queued before a call: the oldest
    goes first, then the call; a turn takes no new change after TURN_SECONDS."""
    batches = counting_commits(cluster, monkeypatch)
    order: list[str] = []

    def own(k: int) -> Callable[[], object]:
        def body(txn: object) -> None:
            order.append(f"own{k}")
            time.sleep(0.02)
        return lambda: cluster.write("tashi-cm", body)  # type: ignore[arg-type]

    def call() -> object:
        def body(txn: object) -> cmpb.CreateInstanceResponse:
            order.append("call")
            return create(cluster, "urgent")
        return cluster.mutate("alice", "", "Test", cmpb.CreateInstanceResponse, body)  # type: ignore[arg-type]

    turns = sum(cluster.combiner.turns.counts)
    out = queued_together(cluster, [*(own(k) for k in range(10)), call])
    assert isinstance(out[-1], cmpb.CreateInstanceResponse)
    assert order[:2] == ["own0", "call"] and order[2:] == [f"own{k}" for k in range(1, 10)]
    # 10 x 20 ms in turns of at most 50 ms and one change more: 4 turns or more.
    assert sum(cluster.combiner.turns.counts) - turns >= 4
    assert len(batches) == 1, "turns without a change write nothing; the create wrote once"
    memory_is_the_store(cluster)


def test_a_slow_turn_is_logged_with_its_longest_change(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(commits, "SLOW_TURN_SECONDS", 0.1)

    def dawdle(txn: object) -> None:
        time.sleep(0.15)

    with caplog.at_level(logging.WARNING, logger="tashi.cm.commits"):
        cluster.write("test", dawdle)  # type: ignore[arg-type]
        create(cluster, "quick")
    slow = [r.getMessage() for r in caplog.records if "turn of the cluster's lock" in r.message]
    assert len(slow) == 1 and "1 changes" in slow[0], slow
    assert "the longest test_a_slow_turn_is_logged_with_its_longest_change.dawdle (0.1" in slow[0]
