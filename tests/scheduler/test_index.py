"""The capacity index and the view that feeds it agree with a full scan."""

from __future__ import annotations

import dataclasses
import random

import pytest

from tashi.scheduler.cluster import ClusterView
from tashi.scheduler.index import CapacityIndex
from tashi.scheduler.model import (
    Chosen,
    Hints,
    HostState,
    HostView,
    Policy,
    Refused,
    VmSpec,
    VmState,
)
from tashi.scheduler.placer import Placer
from tashi.scheduler.scorers import SCORERS, policy_for


def random_cluster(rng: random.Random, n: int) -> ClusterView:
    view = ClusterView(rng=rng)
    for i in range(1, n + 1):
        view.upsert_host(HostView(
            id=i, name=f"h{i}", up=rng.random() > 0.1,
            state=HostState.DRAINED if rng.random() < 0.05 else HostState.NORMAL,
            cores=rng.choice([2, 4, 8, 16]), memory_mib=rng.choice([2048, 4096, 16384, 32768]),
            reserved_for=frozenset({"bob"}) if rng.random() < 0.05 else frozenset(),
            reports_networks=True,
            ready_networks=frozenset({1}) if rng.random() < 0.9 else frozenset()))
    return view


def random_vm(rng: random.Random, vid: int) -> VmSpec:
    return VmSpec(
        id=vid, name=f"vm{vid}", owner=rng.choice(["alice", "bob"]),
        cores=rng.choice([1, 1, 2, 4]), memory_mib=rng.choice([512, 1024, 2048, 4096]),
        networks=(1,) if rng.random() < 0.3 else (),
        hints=Hints(dense_pack=rng.choice([None, True, False]),
                    anti_affinity_group="g" if rng.random() < 0.1 else ""))


@pytest.mark.parametrize("seed", range(6))
def test_indexed_decisions_rank_as_the_full_scan(seed: int) -> None:
    """Fill a random cluster until nothing fits: every indexed choice scores as the
    naive scan's best, and every refusal is a refusal of the naive scan too."""
    rng = random.Random(seed)
    view = random_cluster(rng, 60)
    placer = Placer(view, rng.choice(list(Policy)))
    refusals = placed = 0
    for vid in range(1, 1500):
        vm = random_vm(rng, vid)
        fast, slow = placer.decide(vm), placer.decide_naive(vm)
        assert isinstance(fast, Chosen) == isinstance(slow, Chosen), (fast, slow)
        if isinstance(fast, Refused):
            refusals += 1
            continue
        assert isinstance(slow, Chosen)
        score = SCORERS[policy_for(vm, placer.default_policy)]
        assert score(view.host(fast.host_id)) == score(view.host(slow.host_id))  # type: ignore[arg-type]
        view.upsert_instance(dataclasses.replace(
            vm, state=VmState.ACTIVATING, host_id=fast.host_id, charged_hosts=(fast.host_id,)))
        placed += 1
        if rng.random() < 0.1:  # some VMs go away and give room back
            gone = rng.choice([i.id for i in view.instances()])
            view.delete_instance(gone)
    assert placed > 100 and refusals > 100
    check_index_matches_hosts(view)


def check_index_matches_hosts(view: ClusterView) -> None:
    index = view.index
    for host in view.hosts():
        assert (host.id in index) == host.schedulable
        if host.schedulable:
            assert index._where[host.id] == (host.instance_count, host.free_cores,
                                             host.free_memory_mib)
    assert len(index) == sum(1 for h in view.hosts() if h.schedulable)


def test_usage_follows_instances_through_their_life() -> None:
    view = ClusterView()
    view.upsert_host(HostView(id=1, name="h1", cores=8, memory_mib=8192))
    vm = VmSpec(id=5, cores=2, memory_mib=1024)
    view.upsert_instance(vm)
    assert view.host(1).instance_count == 0  # type: ignore[union-attr]
    running = dataclasses.replace(vm, state=VmState.OTHER, host_id=1, charged_hosts=(1,))
    view.upsert_instance(running)
    h = view.host(1)
    assert h is not None and (h.used_cores, h.used_memory_mib, h.instance_count) == (2, 1024, 1)
    epoch = view.capacity_epoch
    view.upsert_instance(running)  # the same again changes nothing
    assert view.capacity_epoch == epoch
    view.delete_instance(5)
    h = view.host(1)
    assert h is not None and (h.used_cores, h.instance_count) == (0, 0)
    assert view.capacity_epoch > epoch
    check_index_matches_hosts(view)


def test_instances_on_a_host_not_yet_known_count_once_it_arrives() -> None:
    view = ClusterView()
    view.upsert_instance(VmSpec(id=5, cores=3, state=VmState.OTHER, host_id=9,
                                charged_hosts=(9,)))
    view.upsert_host(HostView(id=9, name="late", cores=4, memory_mib=4096))
    assert view.host(9).free_cores == 1  # type: ignore[union-attr]


def test_capacity_epoch_moves_only_when_room_may_appear() -> None:
    view = ClusterView()
    base = HostView(id=1, name="h1", cores=4, memory_mib=4096, up=False)
    view.upsert_host(base)
    e = view.capacity_epoch
    view.upsert_host(dataclasses.replace(base, up=True))
    assert view.capacity_epoch > e
    e = view.capacity_epoch
    view.upsert_host(dataclasses.replace(base, up=True))
    assert view.capacity_epoch == e
    view.upsert_host(dataclasses.replace(base, up=True, state=HostState.DRAINED))
    assert view.capacity_epoch == e
    view.upsert_host(dataclasses.replace(base, up=True))
    assert view.capacity_epoch > e
    e = view.capacity_epoch
    view.upsert_host(dataclasses.replace(base, up=True, cores=8))
    assert view.capacity_epoch > e


def test_index_yields_in_policy_order_and_spreads_ties() -> None:
    index = CapacityIndex(random.Random(3))
    index.put(1, 0, 8, 8192)
    index.put(2, 1, 7, 7168)
    index.put(3, 0, 8, 8192)
    index.put(4, 2, 1, 1024)
    index.put(5, 0, 2, 9000)
    index.put(6, 3, 2, 4096)
    dense = list(index.candidates(2, 2048, Policy.DENSE_PACK))
    # fewest free cores, then least free memory, then most VMs
    assert dense[:3] == [6, 5, 2] and sorted(dense[3:]) == [1, 3]
    index.remove(5)
    index.remove(6)
    spread = list(index.candidates(2, 2048, Policy.SPREAD))
    assert set(spread[:2]) == {1, 3} and spread[2] == 2
    assert 4 not in spread
    firsts = {next(index.candidates(1, 1, Policy.SPREAD)) for _ in range(50)}
    assert firsts == {1, 3}  # ties broken at random
    index.put(4, 0, 8, 8192)
    index.remove(1)
    index.remove(3)
    assert next(index.candidates(1, 1, Policy.SPREAD)) == 4
    assert index.shortfall(9, 1) == (2, 0)
    assert index.shortfall(1, 8000) == (0, 1)
    assert not index.any_fits(9, 1)


def test_host_views_carry_every_field_of_the_host() -> None:
    from tashi.scheduler.cluster import _with_usage

    host = HostView(id=3, name="h3", up=False, state=HostState.DRAINED, cores=7,
                    memory_mib=77, reserved_for=frozenset({"a"}), reports_networks=True,
                    ready_networks=frozenset({1}), network_problems=((2, "x"),))
    assert _with_usage(host, [1, 2, 3]) == dataclasses.replace(
        host, used_cores=1, used_memory_mib=2, instance_count=3)
