"""Every filter, scorer and hint of the placement policy, on plain values (no gRPC)."""

from __future__ import annotations

import random

import pytest

from tashi.scheduler.cluster import ClusterView
from tashi.scheduler.convert import vm_spec
from tashi.scheduler.filters import (
    AntiAffinity,
    FreeCapacity,
    HostNormal,
    HostUp,
    NetworksReady,
    RecentStartFailure,
    Reservation,
    vm_failure,
)
from tashi.scheduler.hints import parse_bool, parse_hints
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
from tashi.scheduler.scorers import dense_pack_key, policy_for, spread_key
from tashi.v1 import resources_pb2 as pb


def host(hid: int, cores: int = 8, mem: int = 8192, **kw: object) -> HostView:
    return HostView(id=hid, name=f"h{hid}", cores=cores, memory_mib=mem, **kw)  # type: ignore[arg-type]


def vm(vid: int, cores: int = 1, mem: int = 1024, **kw: object) -> VmSpec:
    return VmSpec(id=vid, name=f"vm{vid}", owner="alice", cores=cores, memory_mib=mem, **kw)  # type: ignore[arg-type]


def running(vid: int, host_id: int, cores: int = 1, mem: int = 1024, **kw: object) -> VmSpec:
    return vm(vid, cores, mem, state=VmState.OTHER, host_id=host_id, charged_hosts=(host_id,),
              **kw)


def view_of(hosts: list[HostView], instances: list[VmSpec] = ()) -> ClusterView:  # type: ignore[assignment]
    view = ClusterView(rng=random.Random(1))
    for h in hosts:
        view.upsert_host(h)
    for i in instances:
        view.upsert_instance(i)
    return view


# -- filters -----------------------------------------------------------------------------
EMPTY = view_of([])


def test_host_up_filter() -> None:
    assert HostUp().check(host(1), vm(1), EMPTY) is None
    failure = HostUp().check(host(1, up=False), vm(1), EMPTY)
    assert failure is not None and failure.key == "down"


@pytest.mark.parametrize("state", [HostState.DRAINED, HostState.VERSION_MISMATCH,
                                   HostState.UNKNOWN])
def test_host_normal_filter(state: HostState) -> None:
    assert HostNormal().check(host(1), vm(1), EMPTY) is None
    failure = HostNormal().check(host(1, state=state), vm(1), EMPTY)
    assert failure is not None and state.value in failure.detail


def test_reservation_filter() -> None:
    assert Reservation().check(host(1), vm(1), EMPTY) is None
    assert Reservation().check(host(1, reserved_for=frozenset({"alice"})), vm(1), EMPTY) is None
    failure = Reservation().check(host(1, reserved_for=frozenset({"bob"})), vm(1), EMPTY)
    assert failure is not None and "bob" in failure.detail


def test_capacity_filters_count_what_is_used() -> None:
    h = host(1, cores=4, mem=4096, used_cores=3, used_memory_mib=1024)
    assert FreeCapacity().check(h, vm(1, cores=1), EMPTY) is None
    failure = FreeCapacity().check(h, vm(1, cores=2), EMPTY)
    assert failure is not None and "needs 2 cores, 1 of 4 free" in failure.detail
    assert FreeCapacity().check(h, vm(1, mem=3072), EMPTY) is None
    failure = FreeCapacity().check(h, vm(1, mem=3073), EMPTY)
    assert failure is not None and "3072 of 4096 MiB free" in failure.detail
    assert failure.key == "not enough free memory"
    # Short of both: cores are named first, as the CM's re-check and getSlots judge it.
    failure = FreeCapacity().check(h, vm(1, cores=2, mem=3073), EMPTY)
    assert failure is not None and failure.key == "not enough free cores"


def test_networks_ready_filter() -> None:
    wants = vm(1, networks=(11, 12))
    ready = host(1, reports_networks=True, ready_networks=frozenset({11, 12}))
    assert NetworksReady().check(ready, wants, EMPTY) is None
    half = host(1, reports_networks=True, ready_networks=frozenset({11}),
                network_problems=((12, "bridge br12 missing"),))
    failure = NetworksReady().check(half, wants, EMPTY)
    assert failure is not None and "network 12 not ready: bridge br12 missing" == failure.detail
    # A node manager without managed networking reports nothing: not checked (as the CM).
    assert NetworksReady().check(host(1), wants, EMPTY) is None


def test_anti_affinity_filter_counts_the_group_per_owner() -> None:
    grouped = Hints(anti_affinity_group="db")
    view = view_of([host(1), host(2)], [running(10, 1, hints=grouped)])
    assert AntiAffinity().check(view.host(1), vm(1, hints=grouped), view) is not None  # type: ignore[arg-type]
    assert AntiAffinity().check(view.host(2), vm(1, hints=grouped), view) is None  # type: ignore[arg-type]
    # Same group name, other owner: no constraint.
    other = VmSpec(id=2, owner="bob", hints=grouped)
    assert AntiAffinity().check(view.host(1), other, view) is None  # type: ignore[arg-type]
    # No group hint: no constraint.
    assert AntiAffinity().check(view.host(1), vm(3), view) is None  # type: ignore[arg-type]


def test_recent_start_failure_filter_expires() -> None:
    now = [100.0]
    view = ClusterView(clock=lambda: now[0])
    view.upsert_host(host(1))
    view.avoid(7, 1, "StartVm: UNAVAILABLE", seconds=30)
    failure = RecentStartFailure().check(view.host(1), vm(7), view)  # type: ignore[arg-type]
    assert failure is not None and "UNAVAILABLE" in failure.detail
    assert RecentStartFailure().check(view.host(1), vm(8), view) is None  # type: ignore[arg-type]
    epoch = view.capacity_epoch
    now[0] = 131.0
    assert RecentStartFailure().check(view.host(1), vm(7), view) is None  # type: ignore[arg-type]
    view.expire_avoids()
    assert view.capacity_epoch > epoch and not view.has_avoids(7)


def test_persistent_disk_in_use_blocks_placement() -> None:
    view = view_of([host(1)], [running(10, 1, disks=("data.img",), persistent_disks=("data.img",))])
    wants = vm(1, disks=("data.img",), persistent_disks=("data.img",))
    assert vm_failure(wants, view) == "persistent disk data.img is in use by instance 10"
    # A disk used only as a copy-on-write base may be shared.
    shared = vm(2, disks=("data.img",))
    assert vm_failure(shared, view) is None
    # Released once the holder leaves its host.
    view.delete_instance(10)
    assert vm_failure(wants, view) is None
    # A pending holder holds nothing.
    view.upsert_instance(vm(11, disks=("data.img",), persistent_disks=("data.img",)))
    assert vm_failure(wants, view) is None


# -- scorers -----------------------------------------------------------------------------
def test_spread_prefers_fewest_vms_then_most_free() -> None:
    busy = host(1, cores=32, instance_count=3, used_cores=3)
    idle_small = host(2, cores=4, instance_count=0)
    idle_big = host(3, cores=16, instance_count=0)
    best = max([busy, idle_small, idle_big], key=spread_key)
    assert best.id == 3


def test_dense_pack_is_best_fit_then_most_vms() -> None:
    busy = host(1, cores=32, instance_count=5, used_cores=5)  # most VMs, lots of room
    tight = host(2, cores=8, instance_count=1, used_cores=6)  # 2 cores left
    idle = host(3, cores=16)
    assert max([busy, tight, idle], key=dense_pack_key).id == 2
    # Equal cores: least memory left wins; equal room: the host with more VMs.
    roomy = host(4, cores=8, mem=16384, used_cores=6)
    assert max([tight, roomy], key=dense_pack_key).id == 2
    twin = host(5, cores=8, instance_count=3, used_cores=6)
    assert max([tight, twin], key=dense_pack_key).id == 5


def test_dense_pack_keeps_the_big_hole_whole() -> None:
    """Issue 16: with the VM count first, a 4-core VM went to the busier host with
    6 cores free and the 6-core VM after it fit nowhere; best fit takes both."""
    view = view_of([host(1), host(2)],
                   [running(10, 1), running(11, 1), running(12, 2, cores=4)])
    for decide in (Placer(view, Policy.DENSE_PACK).decide,
                   Placer(view, Policy.DENSE_PACK).decide_naive):
        assert decide(vm(1, cores=4)) == Chosen(1, 2, "h2")
    view.upsert_instance(running(1, 2, cores=4))
    assert Placer(view, Policy.DENSE_PACK).decide(vm(2, cores=6)) == Chosen(2, 1, "h1")


def test_dense_pack_hint_overrides_default_policy() -> None:
    assert policy_for(vm(1), Policy.SPREAD) is Policy.SPREAD
    assert policy_for(vm(1, hints=Hints(dense_pack=True)), Policy.SPREAD) is Policy.DENSE_PACK
    assert policy_for(vm(1, hints=Hints(dense_pack=False)), Policy.DENSE_PACK) is Policy.SPREAD


# -- hints -------------------------------------------------------------------------------
def test_parse_hints_as_tashi_wrote_them() -> None:
    hints = parse_hints({"targetHost": "h3", "allowElsewhere": "True", "densePack": "true"})
    assert hints == Hints(target_host="h3", allow_elsewhere=True, dense_pack=True)
    assert parse_hints({}) == Hints()
    assert parse_hints({"densePack": "maybe"}).dense_pack is None
    assert parse_bool("False") is False and parse_bool("1") is True and parse_bool(None) is None


def test_anti_affinity_from_the_group_or_a_hint() -> None:
    assert parse_hints({}, group_name="web").anti_affinity_group == "web"
    assert parse_hints({"antiAffinityGroup": "db"}).anti_affinity_group == "db"
    assert parse_hints({"antiAffinityGroup": "db"}, group_name="web").anti_affinity_group == "db"
    assert parse_hints({"antiAffinity": "False"}, group_name="web").anti_affinity_group == ""
    assert parse_hints({}).anti_affinity_group == ""


# -- the placer --------------------------------------------------------------------------
def test_spread_places_on_the_emptiest_host() -> None:
    view = view_of([host(1), host(2), host(3)], [running(10, 1), running(11, 1), running(12, 2)])
    decision = Placer(view).decide(vm(1))
    assert decision == Chosen(1, 3, "h3")


def test_dense_pack_places_on_the_fullest_host_that_fits() -> None:
    view = view_of([host(1, cores=4), host(2), host(3)],
                   [running(10, 1, cores=4), running(11, 2), running(12, 2), running(13, 3)])
    decision = Placer(view, Policy.DENSE_PACK).decide(vm(1))
    assert isinstance(decision, Chosen) and decision.host_id == 2  # host 1 is full


def test_target_host_by_name_or_id() -> None:
    view = view_of([host(1), host(2), host(3)])
    placer = Placer(view)
    assert placer.decide(vm(1, hints=Hints(target_host="h1"))) == Chosen(1, 1, "h1")
    assert placer.decide(vm(1, hints=Hints(target_host="2"))) == Chosen(1, 2, "h2")


def test_target_host_that_cannot_take_it_refuses_with_its_reason() -> None:
    view = view_of([host(1, up=False), host(2)])
    decision = Placer(view).decide(vm(1, hints=Hints(target_host="h1")))
    assert decision == Refused(1, "target host h1: host is down")
    decision = Placer(view).decide(vm(1, hints=Hints(target_host="nope")))
    assert decision == Refused(1, "target host nope does not exist")


def test_allow_elsewhere_falls_back_to_any_host() -> None:
    view = view_of([host(1, up=False), host(2)])
    hints = Hints(target_host="h1", allow_elsewhere=True)
    assert Placer(view).decide(vm(1, hints=hints)) == Chosen(1, 2, "h2")
    hints = Hints(target_host="nope", allow_elsewhere=True)
    assert Placer(view).decide(vm(1, hints=hints)) == Chosen(1, 2, "h2")


def test_anti_affinity_spreads_a_group_even_under_dense_pack() -> None:
    grouped = Hints(anti_affinity_group="db", dense_pack=True)
    view = view_of([host(1), host(2), host(3)])
    placer = Placer(view)
    chosen = []
    for i in range(3):
        d = placer.decide(vm(i + 1, hints=grouped))
        assert isinstance(d, Chosen)
        chosen.append(d.host_id)
        view.upsert_instance(running(i + 1, d.host_id, hints=grouped))
    assert sorted(chosen) == [1, 2, 3]
    refused = placer.decide(vm(9, hints=grouped))
    assert isinstance(refused, Refused)
    assert "3 hosts already holds a VM of anti-affinity group db" in refused.reason


def test_reason_says_why_no_host_fits() -> None:
    view = view_of([host(1, cores=2), host(2, up=False), host(3, state=HostState.DRAINED),
                    host(4, reserved_for=frozenset({"bob"})), host(5, mem=1024)],
                   [running(10, 1, cores=2)])
    decision = Placer(view).decide(vm(1, mem=2048))
    assert isinstance(decision, Refused)
    r = decision.reason
    assert r.startswith("fits on no host (needs 1 cores, 2048 MiB): ")
    for part in ("1 host not enough free cores", "1 host down", "1 host in state Drained",
                 "1 host reserved for other users", "1 host not enough free memory"):
        assert part in r, r


def test_no_hosts_at_all() -> None:
    decision = Placer(view_of([])).decide(vm(1))
    assert decision == Refused(1, "fits on no host (needs 1 cores, 1024 MiB): no hosts are "
                                  "registered")


def test_refusal_is_remembered_until_room_appears() -> None:
    view = view_of([host(1, cores=1)], [running(10, 1)])
    placer = Placer(view)
    assert isinstance(placer.decide(vm(1)), Refused)
    assert isinstance(placer.decide(vm(2)), Refused)  # from the memo
    view.delete_instance(10)  # room appears: the memo must not answer any more
    assert placer.decide(vm(2)) == Chosen(2, 1, "h1")


def test_start_failure_ban_steers_only_that_vm() -> None:
    view = view_of([host(1), host(2, cores=2)])
    view.avoid(1, 1, "boom", 60)
    placer = Placer(view)
    assert placer.decide(vm(1)) == Chosen(1, 2, "h2")
    assert placer.decide(vm(2)) == Chosen(2, 1, "h1")  # spread: host 1 has more free


def test_pending_and_held_instances_hold_no_capacity() -> None:
    view = view_of([host(1, cores=1)],
                   [vm(10, state=VmState.PENDING), vm(11, state=VmState.HELD)])
    assert view.host(1).instance_count == 0  # type: ignore[union-attr]
    assert Placer(view).decide(vm(1)) == Chosen(1, 1, "h1")


def test_a_migration_target_is_charged_too() -> None:
    view = view_of([host(1, cores=2), host(2, cores=2)],
                   [vm(10, cores=2, state=VmState.OTHER, host_id=1, charged_hosts=(1, 2))])
    decision = Placer(view).decide(vm(1))
    assert isinstance(decision, Refused)


def test_convert_takes_the_size_from_the_spec_and_the_placement_from_the_status() -> None:
    inst = pb.Instance(
        id=7, name="m", owner="alice",
        spec=pb.InstanceSpec(cores=2, memory_mib=512, group_name="db",
                             disks=[pb.Disk(uri="a.qcow2", persistent=True)],
                             nics=[pb.Nic(network_id=0)],  # the default network, as asked
                             hints={"densePack": "True", "__migrate_target": "9"}),
        status=pb.InstanceStatus(state=pb.INSTANCE_STATE_MIGRATE_TRANS, host_id=1,
                                 migration_target_host_id=2, charged_host_ids=[1, 2],
                                 reason="moving", nics=[pb.Nic(network_id=5, ip="10.0.0.9")]))
    v = vm_spec(inst)
    assert (v.cores, v.memory_mib, v.host_id, v.state) == (2, 512, 1, VmState.OTHER)
    # The CM's charged hosts, never a user's hint.
    assert v.charged_hosts == (1, 2)
    assert v.networks == (5,) and v.nic_ips == ("10.0.0.9",)
    assert v.persistent_disks == ("a.qcow2",) and v.state_reason == "moving"
    assert v.hints.dense_pack is True and v.anti_affinity_key == ("alice", "db")
    held = pb.Instance(id=8, spec=pb.InstanceSpec(cores=1, memory_mib=1),
                       status=pb.InstanceStatus(state=pb.INSTANCE_STATE_HELD))
    assert vm_spec(held).state is VmState.HELD and vm_spec(held).charged_hosts == ()


def test_a_resume_goes_to_the_host_holding_its_saved_state() -> None:
    """Issue 13: the scheduler sent resumes anywhere, where the save file is not."""
    view = view_of([host(1, state=HostState.DRAINED), host(2), host(3, up=False)])
    placer = Placer(view)
    for decide in (placer.decide, placer.decide_naive):
        assert decide(vm(1, resume_host_id=1)) == Chosen(1, 1, "h1"), "drained, yet it is there"
        down = decide(vm(2, resume_host_id=3))
        assert isinstance(down, Refused) and "saved state is on host h3" in down.reason
        assert "host is down" in down.reason
        gone = decide(vm(3, resume_host_id=9))
        assert isinstance(gone, Refused) and "no longer registered" in gone.reason
    assert Placer(view).decide(vm(4)) == Chosen(4, 2, "h2"), "a new VM never goes to h1"
    suspended = pb.Instance(id=5, status=pb.InstanceStatus(
        state=pb.INSTANCE_STATE_PENDING, suspend_image="/s/5.save", suspend_host_id=1))
    assert vm_spec(suspended).resume_host_id == 1
