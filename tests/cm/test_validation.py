"""Bad input gets a clear status code and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tashi.runtime.client import ClusterClient, TashiError
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, inproc_cm, register_host

C = grpc.StatusCode


def inst(name: str = "ok", **kw: object) -> pb.Instance:
    base: dict[str, object] = {"cores": 1, "memory_mib": 128}
    base.update(kw)
    return pb.Instance(name=name, spec=pb.InstanceSpec(**base))  # type: ignore[arg-type]


BAD: list[tuple[str, Callable[[ClusterClient], object], grpc.StatusCode, str]] = [
    ("empty name", lambda c: c.create_instances(inst(name="")), C.INVALID_ARGUMENT, "empty"),
    ("space in name", lambda c: c.create_instances(inst(name="a b")), C.INVALID_ARGUMENT,
     "letters, digits"),
    ("slash in name", lambda c: c.create_instances(inst(name="a/b")), C.INVALID_ARGUMENT,
     "letters, digits"),
    ("digits-only name", lambda c: c.create_instances(inst(name="123")), C.INVALID_ARGUMENT,
     "all digits"),
    ("zero cores", lambda c: c.create_instances(inst(cores=0)), C.INVALID_ARGUMENT,
     "between 1 and 8"),
    ("nine cores", lambda c: c.create_instances(inst(cores=9)), C.INVALID_ARGUMENT,
     "between 1 and 8"),
    ("zero memory", lambda c: c.create_instances(inst(memory_mib=0)), C.INVALID_ARGUMENT,
     "8192 MiB"),
    ("too much memory", lambda c: c.create_instances(inst(memory_mib=8193)), C.INVALID_ARGUMENT,
     "8192 MiB"),
    ("absolute disk", lambda c: c.create_instances(inst(disks=[pb.Disk(uri="/etc/passwd")])),
     C.INVALID_ARGUMENT, "absolute"),
    ("dotdot disk", lambda c: c.create_instances(inst(disks=[pb.Disk(uri="../x.qcow2")])),
     C.INVALID_ARGUMENT, ".."),
    ("hidden dotdot", lambda c: c.create_instances(inst(disks=[pb.Disk(uri="a/../../x")])),
     C.INVALID_ARGUMENT, ".."),
    ("missing image", lambda c: c.create_instances(inst(disks=[pb.Disk(uri="nope.qcow2")])),
     C.NOT_FOUND, "not in the image store"),
    ("unknown network", lambda c: c.create_instances(inst(nics=[pb.Nic(network_id=77)])),
     C.INVALID_ARGUMENT, "no network"),
    ("no default network", lambda c: c.create_instances(inst(nics=[pb.Nic()])),
     C.INVALID_ARGUMENT, "default"),
    ("status from a user", lambda c: c.create_instances(pb.Instance(
        name="st", spec=pb.InstanceSpec(cores=1, memory_mib=64),
        status=pb.InstanceStatus(state=pb.INSTANCE_STATE_RUNNING, host_id=1))),
     C.INVALID_ARGUMENT, "status"),
    ("negative count", lambda c: c.create_instances(inst(), count=-1), C.INVALID_ARGUMENT,
     "count"),
    ("duplicate name", lambda c: c.create_instances(inst(name="taken")), C.ALREADY_EXISTS,
     "already exists"),
    ("createMany over taken", lambda c: c.create_instances(inst(name="batch"), count=3),
     C.ALREADY_EXISTS, "batch-1"),
    ("no such instance", lambda c: c.instance_action("Pause", 999), C.NOT_FOUND, "999"),
    ("no instance named", lambda c: c.instance_action("Delete", "ghost"), C.NOT_FOUND, "ghost"),
    ("bad host name", lambda c: c.create_host("bad host"), C.INVALID_ARGUMENT, "letters"),
    ("duplicate host", lambda c: c.create_host("h1"), C.ALREADY_EXISTS, "already"),
    ("host state version", lambda c: c.set_host_state("h1", pb.HOST_STATE_VERSION_MISMATCH),
     C.INVALID_ARGUMENT, "normal or drained"),
    ("reserve for nobody", lambda c: c.add_reservation("h1", "nobody"), C.NOT_FOUND, "nobody"),
    ("bad user name", lambda c: c.create_user("a b"), C.INVALID_ARGUMENT, "user name"),
    ("vlan out of range", lambda c: c.create_network(pb.Network(
        id=3, name="v", kind=pb.NETWORK_KIND_VLAN, vlan_id=5000)), C.INVALID_ARGUMENT, "4094"),
    ("vxlan without group", lambda c: c.create_network(pb.Network(
        id=3, name="v", kind=pb.NETWORK_KIND_VXLAN, vni=5)), C.INVALID_ARGUMENT, "group"),
    ("vxlan unicast group", lambda c: c.create_network(pb.Network(
        id=3, name="v", kind=pb.NETWORK_KIND_VXLAN, vni=5, group="10.0.0.1")),
     C.INVALID_ARGUMENT, "multicast"),
    ("mtu too big", lambda c: c.create_network(pb.Network(id=3, name="v", mtu=65000)),
     C.INVALID_ARGUMENT, "MTU"),
    ("bad cidr", lambda c: c.create_network(pb.Network(id=3, name="v", cidr="10.0.0.1/24")),
     C.INVALID_ARGUMENT, "range"),
    ("network id zero", lambda c: c.create_network(pb.Network(id=0, name="v")),
     C.INVALID_ARGUMENT, "positive"),
    ("bad page token", lambda c: c.call(c.cm.ListInstances, cmpb.ListInstancesRequest(
        page_token="zz")), C.INVALID_ARGUMENT, "page_token"),
    ("65 hints", lambda c: c.create_instances(inst(hints={f"k{i}": "v" for i in range(65)})),
     C.INVALID_ARGUMENT, "at most 64 hints"),
    ("hint value of 1025", lambda c: c.create_instances(inst(hints={"k": "v" * 1025})),
     C.INVALID_ARGUMENT, "longer than 1024"),
    ("hint name of 1 MB", lambda c: c.create_instances(inst(hints={"k" * 2**20: "v"})),
     C.INVALID_ARGUMENT, "(1048576 chars)"),
    ("hints of 9 kB in all", lambda c: c.create_instances(
        inst(hints={f"k{i}": "v" * 1000 for i in range(9)})),
     C.INVALID_ARGUMENT, "8192 bytes in all"),
    ("33 disks", lambda c: c.create_instances(inst(disks=[pb.Disk(uri="base.qcow2")] * 33)),
     C.INVALID_ARGUMENT, "at most 32 disks"),
    ("request id of 129", lambda c: c.create_instances(inst(name="rid"), request_id="r" * 129),
     C.INVALID_ARGUMENT, "request_id"),
    ("name of 1 MB", lambda c: c.create_instances(inst(name="n" * 2**20)),
     C.INVALID_ARGUMENT, "(1048576 chars)"),
    ("fixed address outside its network", lambda c: c.create_instances(
        inst(nics=[pb.Nic(network_id=4, ip="10.2.0.5")])),
     C.INVALID_ARGUMENT, "outside network"),
    ("delete busy host", lambda c: c.delete_host("h1") if c.get_host("h1").instance_count
     else c.delete_host("h1"), C.FAILED_PRECONDITION, "instances"),
]


def _world(client: ClusterClient) -> tuple[object, ...]:
    return (
        sorted((i.id, i.name, i.status.state) for i in client.list_instances()),
        sorted((h.id, h.name, h.state, h.notes, tuple(h.reserved_for)) for h in
               client.list_hosts()),
        sorted((n.id, n.name) for n in client.list_networks()),
        sorted(u.name for u in client.list_users()),
    )


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input(icm: InProcCM, case: tuple) -> None:  # type: ignore[type-arg]
    _name, call, code, words = case
    root = icm.client()
    root.create_host("h1")
    register_host(root, "h1", add=False)
    root.create_instances(inst(name="taken"))
    root.create_instances(inst(name="batch-1"))
    root.create_network(pb.Network(id=4, name="lan", cidr="10.1.0.0/24"))
    from tashi.v1 import placement_pb2 as pl
    taken = root.get_instance("taken")
    root.activate([pl.Placement(instance_id=taken.id, host_id=root.get_host("h1").id)])
    before = _world(root)
    seq = icm.cluster.events.last_seq
    with pytest.raises(TashiError) as err:
        call(root)
    assert err.value.code == code, err.value
    assert words in err.value.message, err.value.message
    assert len(err.value.message) < 300, "the message repeats no large input"
    assert _world(root) == before, "a refused call changed the cluster"
    assert icm.cluster.events.last_seq == seq, "a refused call wrote an event"


def test_request_id_retry_returns_first_answer(icm: InProcCM) -> None:
    alice = icm.client("alice")
    first = alice.create_instances(inst(name="once"), count=2, request_id="req-1")
    again = alice.create_instances(inst(name="once"), count=2, request_id="req-1")
    assert [i.id for i in first] == [i.id for i in again]
    assert len(alice.list_instances()) == 2
    gone = alice.instance_action("Delete", first[0].id, request_id="req-2")
    assert alice.instance_action("Delete", first[0].id, request_id="req-2") == gone
    with pytest.raises(TashiError) as err:
        alice.instance_action("Delete", first[1].id, request_id="req-1")
    assert err.value.code == C.INVALID_ARGUMENT and "already used" in err.value.message
    assert [i.name for i in alice.list_instances()] == ["once-1"]


def test_too_many_nics_is_invalid_not_a_crash(icm: InProcCM) -> None:
    """NIC indexes feed the stable MAC scheme (0..255); past it the CM once crashed."""
    root = icm.client()
    root.create_network(pb.Network(id=1, name="flat", kind=pb.NETWORK_KIND_FLAT))
    before = _world(root)
    with pytest.raises(TashiError) as err:
        root.create_instances(inst(nics=[pb.Nic(network_id=1)] * 33))
    assert err.value.code == C.INVALID_ARGUMENT and "32 NICs" in err.value.message
    assert _world(root) == before
    assert len(root.create_instances(inst(nics=[pb.Nic(network_id=1)] * 32))[0].status.nics) == 32


def test_quotas_per_user(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, quota_instances=3, quota_cores=4, quota_memory=1024) as cm:
        root, alice = cm.client(), cm.client("alice")
        root.create_user("alice")
        made = alice.create_instances(inst(name="a", cores=1, memory_mib=128), count=2)
        seq = cm.cluster.events.last_seq
        for name, kw, count, what in [
                ("b", {"cores": 1, "memory_mib": 128}, 2, "instances"),
                ("c", {"cores": 3, "memory_mib": 128}, 0, "cores"),
                ("d", {"cores": 1, "memory_mib": 900}, 0, "MiB")]:
            with pytest.raises(TashiError) as err:
                alice.create_instances(inst(name=name, **kw), count=count)
            assert err.value.code == C.RESOURCE_EXHAUSTED and what in err.value.message
        assert cm.cluster.events.last_seq == seq, "a refused create wrote nothing"
        alice.create_instances(inst(name="e", cores=1, memory_mib=128))
        alice.instance_action("Delete", made[0].id)
        alice.create_instances(inst(name="f", cores=1, memory_mib=128))
        root.create_instances(inst(name="admin", cores=8, memory_mib=8192), count=5)
        assert len(root.list_instances(owner="root")) == 5, "admins have no quota"
