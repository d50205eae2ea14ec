"""Every ClusterManagerService / NodeRegistryService / PlacementService call over real gRPC."""

from __future__ import annotations

import grpc
import pytest

from tashi.runtime.client import TashiError
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, register_host

S = pb


def spec(name: str, cores: int = 1, memory: int = 256, **kw: object) -> pb.Instance:
    return pb.Instance(name=name, spec=pb.InstanceSpec(  # type: ignore[arg-type]
        cores=cores, memory_mib=memory, **kw))


def test_create_single_and_many(icm: InProcCM) -> None:
    alice = icm.client("alice")
    [one] = alice.create_instances(spec("solo", disks=[pb.Disk(uri="base.qcow2")],
                                        hints={"densePack": "True", "__internal": "x"}))
    assert one.name == "solo" and one.owner == "alice" and \
        one.status.state == S.INSTANCE_STATE_PENDING
    assert dict(one.spec.hints) == {"densePack": "True", "__internal": "x"}, \
        "hints are the user's, kept as given"
    many = alice.create_instances(spec("web"), count=4)
    assert [i.name for i in many] == ["web-0", "web-1", "web-2", "web-3"]
    assert len({i.id for i in many}) == 4
    listed = alice.list_instances()
    assert {i.name for i in listed} == {"solo", "web-0", "web-1", "web-2", "web-3"}
    assert alice.get_instance("web-2").id == many[2].id
    assert alice.get_instance(many[1].id).name == "web-1"


def test_list_filters_and_pages(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    alice.create_instances(spec("a"), count=7)
    root.create_instances(spec("r"), count=3)
    assert len(root.list_instances(owner="alice")) == 7
    assert len(root.list_instances(page_size=2)) == 10, "pages are followed to the end"
    from tashi.v1 import cluster_manager_pb2 as cmpb

    first = root.call(root.cm.ListInstances, cmpb.ListInstancesRequest(page_size=4))
    assert len(first.instances) == 4 and first.next_page_token
    with pytest.raises(TashiError) as err:
        root.call(root.cm.ListInstances, cmpb.ListInstancesRequest(page_size=5001))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_pages_stay_right_while_instances_come_and_go(icm: InProcCM) -> None:
    """Pages start by bisecting the sorted ids, kept until an id comes or goes:
    between pages, a deleted instance is not shown, a new one is, and none of the
    rest is skipped or repeated; filters hold across pages."""
    from tashi.v1 import cluster_manager_pb2 as cmpb

    root, alice = icm.client(), icm.client("alice")
    ids = [i.id for i in alice.create_instances(spec("a"), count=6)]
    mine = root.create_instances(spec("r"), count=3)

    def page(token: str, **filters: object) -> cmpb.ListInstancesResponse:
        return root.call(root.cm.ListInstances, cmpb.ListInstancesRequest(
            page_size=4, page_token=token, **filters))
    first = page("")
    assert [i.id for i in first.instances] == ids[:4]
    alice.instance_action("Delete", ids[4])
    late = alice.create_instances(spec("late"))[0]
    second = page(first.next_page_token)
    third = page(second.next_page_token)
    shown = [i.id for i in second.instances] + [i.id for i in third.instances]
    assert shown == [ids[5]] + [m.id for m in mine] + [late.id]
    assert not third.next_page_token
    theirs = page("", owner="alice")
    rest = page(theirs.next_page_token, owner="alice")
    assert [i.id for i in theirs.instances] + [i.id for i in rest.instances] == \
        ids[:4] + [ids[5], late.id]
    assert not rest.next_page_token
    assert [i.id for i in page("", owner="root").instances] == [m.id for m in mine]


def test_a_listing_follows_each_change_and_shows_each_caller_its_view(icm: InProcCM) -> None:
    """ListInstances answers from bytes serialized once per change (cm/listing.py):
    a change shows in the next listing, and another user's instances stay cut down."""
    root, alice, bob = icm.client(), icm.client("alice"), icm.client("bob")
    vms = alice.create_instances(spec("v"), count=3)
    before = {i.id: i for i in root.list_instances()}
    assert [before[v.id].status.state for v in vms] == [S.INSTANCE_STATE_PENDING] * 3
    root.hold([pl.Hold(instance_id=vms[1].id, reason="fits nowhere")])
    after = {i.id: i for i in root.list_instances()}
    assert after[vms[1].id].status.state == S.INSTANCE_STATE_HELD
    assert after[vms[1].id].status.reason == "fits nowhere"
    assert after[vms[0].id] == before[vms[0].id] == alice.get_instance(vms[0].id)
    seen = {i.id: i for i in bob.list_instances()}
    assert seen[vms[1].id] == pb.Instance(id=vms[1].id, name=vms[1].name, status=pb.InstanceStatus(
        state=S.INSTANCE_STATE_HELD)), "bob sees id, name and state only"
    alice.instance_action("Delete", vms[2].id)
    assert vms[2].id not in {i.id for i in root.list_instances()}


def test_destroy_pending_goes_at_once(icm: InProcCM) -> None:
    alice = icm.client("alice")
    [inst] = alice.create_instances(spec("tmp"))
    gone = alice.instance_action("Delete", inst.id)
    assert gone.status.state == S.INSTANCE_STATE_EXITED
    with pytest.raises(TashiError) as err:
        alice.get_instance(inst.id)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_transitions_name_the_current_state(icm: InProcCM) -> None:
    alice = icm.client("alice")
    [inst] = alice.create_instances(spec("p"))
    for verb in ("Pause", "Unpause", "Suspend", "Resume", "Shutdown"):
        with pytest.raises(TashiError) as err:
            alice.instance_action(verb, inst.id)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "Pending" in err.value.message
    with pytest.raises(TashiError) as err:
        alice.migrate_instance(inst.id, "nohost")
    assert err.value.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


def test_ownership_checked_on_server(icm: InProcCM) -> None:
    alice, bob, root = icm.client("alice"), icm.client("bob"), icm.client()
    [inst] = alice.create_instances(spec("mine"))
    for verb in ("Delete", "Pause", "Shutdown", "Suspend"):
        with pytest.raises(TashiError) as err:
            bob.instance_action(verb, inst.id)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert alice.get_instance(inst.id).status.state == S.INSTANCE_STATE_PENDING
    root.instance_action("Delete", inst.id)  # admins may


def test_unknown_user_and_admin_only(icm: InProcCM) -> None:
    stranger, alice = icm.client("mallory"), icm.client("alice")
    with pytest.raises(TashiError) as err:
        stranger.list_instances()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    anonymous = icm.client("")
    with pytest.raises(TashiError) as err:
        anonymous.list_hosts()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    admin_calls = [
        lambda: alice.create_host("h9"),
        lambda: alice.create_user("eve"),
        lambda: alice.create_network(pb.Network(id=5, name="n5")),
        lambda: alice.call(alice.registry.RegisterHost, nr.RegisterHostRequest(name="h9")),
        lambda: alice.activate([pl.Placement(instance_id=1, host_id=1)]),
        lambda: next(alice.watch_events(0)),
    ]
    for call in admin_calls:
        with pytest.raises(TashiError) as err:
            call()
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED, call


def test_hosts_reservations_notes_state(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    host = root.create_host("node1", notes="rack 3")
    assert host.state == S.HOST_STATE_NORMAL and not host.up and host.notes == "rack 3"
    assert root.set_host_notes("node1", "rack 4").notes == "rack 4"
    assert root.set_host_state("node1", S.HOST_STATE_DRAINED).state == S.HOST_STATE_DRAINED
    res = root.add_reservation("node1", "alice")
    assert list(res.users) == ["alice"]
    assert list(alice.get_reservation(host.id).users) == ["alice"]
    assert list(root.remove_reservation("node1", "alice").users) == []
    with pytest.raises(TashiError) as err:
        root.remove_reservation("node1", "alice")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert [h.name for h in root.list_hosts()] == ["node1"]
    root.delete_host("node1")
    assert root.list_hosts() == []


def test_users_networks_images(icm: InProcCM) -> None:
    root = icm.client()
    users = {u.name: u.admin for u in root.list_users()}
    assert users == {"root": True, "alice": False, "bob": False}
    net = root.create_network(pb.Network(id=11, name="jumbo", kind=S.NETWORK_KIND_VLAN,
                                         vlan_id=11, mtu=9000, default=True))
    assert net.default
    root.create_network(pb.Network(id=12, name="other", default=True))
    nets = {n.id: n for n in root.list_networks()}
    assert not nets[11].default and nets[12].default, "one default at a time"
    assert nets[12].kind == S.NETWORK_KIND_FLAT
    [inst] = icm.client("alice").create_instances(spec("n", nics=[pb.Nic()]))
    assert inst.spec.nics[0].network_id == 12 and not inst.spec.nics[0].mac
    assert inst.status.nics[0].network_id == 12 and inst.status.nics[0].mac.startswith("56:")
    with pytest.raises(TashiError) as err:
        root.delete_network(12)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    root.delete_network(11)
    assert [i.name for i in root.list_images()] == ["base.qcow2", "sub/data.img"]


def test_register_activate_hold(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    with pytest.raises(TashiError) as err:
        register_host(root, "ghost", add=False)
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "addHost" in err.value.message
    reg = register_host(root, "h1", cores=4, memory_mib=4096)
    assert reg.host.up and reg.host.cores == 4
    vms = alice.create_instances(spec("v", cores=2, memory=1024), count=3)
    resp = root.activate([pl.Placement(instance_id=v.id, host_id=reg.host.id) for v in vms])
    accepted = [r.accepted for r in resp.results]
    assert accepted == [True, True, False], "the third does not fit in 4 cores"
    assert "free cores" in resp.results[2].reason
    host = root.get_host("h1")
    assert (host.used_cores, host.used_memory_mib, host.instance_count) == (4, 2048, 2)
    held = root.hold([pl.Hold(instance_id=vms[2].id, reason="fits nowhere")])
    assert held[0].status.state == S.INSTANCE_STATE_HELD
    got = alice.get_instance(vms[2].id)
    assert got.status.state == S.INSTANCE_STATE_HELD and got.status.reason == "fits nowhere"


def test_node_reports_drive_states(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    host = register_host(root, "h1").host
    [vm] = alice.create_instances(spec("r"))
    root.activate([pl.Placement(instance_id=vm.id, host_id=host.id)])

    def report(state: int, seq: int, **kw: object) -> None:
        root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(name="h1", reports=[
            nr.InstanceReport(instance_id=vm.id, vm_id="tashi-1", state=state, report_seq=seq,
                              **kw)]))  # type: ignore[arg-type]

    report(S.INSTANCE_STATE_RUNNING, 1)
    assert alice.get_instance(vm.id).status.state == S.INSTANCE_STATE_RUNNING
    report(S.INSTANCE_STATE_PAUSED, 2)
    assert alice.get_instance(vm.id).status.state == S.INSTANCE_STATE_PAUSED
    report(S.INSTANCE_STATE_RUNNING, 2)  # a replayed report changes nothing
    assert alice.get_instance(vm.id).status.state == S.INSTANCE_STATE_PAUSED
    report(S.INSTANCE_STATE_RUNNING, 3)  # unpaused outside the CM
    assert alice.get_instance(vm.id).status.state == S.INSTANCE_STATE_RUNNING
    report(S.INSTANCE_STATE_EXITED, 4, message="guest powered off")
    with pytest.raises(TashiError):
        alice.get_instance(vm.id)


def _running(icm: InProcCM, host_name: str = "h1") -> tuple[pb.Instance, pb.Host]:
    root, alice = icm.client(), icm.client("alice")
    host = register_host(root, host_name).host
    [vm] = alice.create_instances(spec(f"vm-on-{host_name}", cores=2, memory=2048))
    root.activate([pl.Placement(instance_id=vm.id, host_id=host.id)])
    root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(name=host_name, reports=[
        nr.InstanceReport(instance_id=vm.id, vm_id="d1", state=S.INSTANCE_STATE_RUNNING,
                          report_seq=1)]))
    return alice.get_instance(vm.id), host


def test_suspend_then_resume_goes_back_to_pending(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    vm, host = _running(icm)
    assert alice.instance_action("Suspend", vm.id).status.state == S.INSTANCE_STATE_SUSPENDING
    root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(name="h1", reports=[
        nr.InstanceReport(instance_id=vm.id, state=S.INSTANCE_STATE_SUSPENDED, report_seq=2,
                          suspend_file="/var/lib/tashi/suspend/1.save")]))
    got = alice.get_instance(vm.id)
    assert got.status.state == S.INSTANCE_STATE_SUSPENDED and got.status.host_id == 0
    assert got.status.suspend_image == "/var/lib/tashi/suspend/1.save"
    assert got.status.suspend_host_id == host.id
    assert not got.spec.hints, "the CM keeps its bookkeeping out of the user's hints"
    assert root.get_host("h1").used_cores == 0, "a suspended instance releases its host"
    resumed = alice.instance_action("Resume", vm.id)
    assert resumed.status.state == S.INSTANCE_STATE_PENDING
    assert resumed.status.suspend_image, "the scheduler's placement restores from the file"


def test_migrate_is_validated(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    vm, _h1 = _running(icm)
    register_host(root, "small", cores=1, memory_mib=512)
    root.create_host("down")
    with pytest.raises(TashiError) as err:
        alice.migrate_instance(vm.id, "small")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "free" in err.value.message
    with pytest.raises(TashiError) as err:
        alice.migrate_instance(vm.id, "down")
    assert "down" in err.value.message
    with pytest.raises(TashiError) as err:
        alice.migrate_instance(vm.id, "h1")
    assert "already runs" in err.value.message
    register_host(root, "big", cores=8, memory_mib=8192)
    moved = alice.migrate_instance(vm.id, "big")
    assert moved.status.state == S.INSTANCE_STATE_MIGRATE_PREP
    assert moved.status.migration_target_host_id == root.get_host("big").id
    assert sorted(moved.status.charged_host_ids) == sorted([_h1.id, root.get_host("big").id])
    assert not moved.spec.hints
    big = root.get_host("big")
    assert big.used_cores == 2, "the target's capacity is held during the migration"


def test_two_proposals_cannot_share_an_address(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    root.create_network(pb.Network(id=1, name="lan", cidr="10.1.0.0/24", default=True))
    host = register_host(root, "h1").host
    a, b, c = alice.create_instances(spec("ip", nics=[pb.Nic()]), count=3)
    first = root.activate([pl.Placement(instance_id=a.id, host_id=host.id, nic_ips=["10.1.0.5"])])
    assert first.results[0].accepted
    assert alice.get_instance(a.id).status.nics[0].ip == "10.1.0.5"
    again = root.activate([
        pl.Placement(instance_id=b.id, host_id=host.id, nic_ips=["10.1.0.5"]),
        pl.Placement(instance_id=c.id, host_id=host.id, nic_ips=["10.1.0.6"]),
        pl.Placement(instance_id=c.id + 1000, host_id=host.id, nic_ips=["10.1.0.6"]),
    ])
    assert not again.results[0].accepted and "10.1.0.5 is already in use" in \
        again.results[0].reason
    assert again.results[1].accepted
    assert alice.get_instance(b.id).status.state == S.INSTANCE_STATE_PENDING
