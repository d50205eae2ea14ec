"""Identity over real mutual TLS on loopback: each principal (an admin, two
users, each host's node manager, the scheduler, accounting, the CM itself, a
stranger with a certificate of another CA, a caller with no certificate)
against a table of calls, each with the code it must get and, on refusal,
nothing changed.  Then the three attacks that identity-by-header allowed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tashi.cm.store import open_store
from tashi.nm.libvirt.driver import LibvirtDriver
from tashi.nm.servicer import NodeManagerServicer
from tashi.runtime import server
from tashi.runtime.certs import create_ca, issue
from tashi.runtime.client import ClusterClient, TashiError
from tashi.runtime.nm_client import NodeManagerClient
from tashi.runtime.tls import Tls
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, node_xml, vm

C = grpc.StatusCode
OK = C.OK


class Site:
    """A site CA, its certificates, and a second CA for a stranger."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "site"
        create_ca(self.dir)
        self.other = root / "other"
        create_ca(self.other, site="elsewhere")

    def tls(self, kind: str, name: str, ca_dir: Path | None = None) -> Tls:
        cert, key = issue(ca_dir or self.dir, kind, name)
        return Tls.load(self.dir / "ca.pem", cert, key)


IDENTITIES = {
    "admin": ("user", "root"),
    "alice": ("user", "alice"),
    "bob": ("user", "bob"),
    "node-h1": ("node", "h1"),
    "node-h2": ("node", "h2"),
    "scheduler": ("service", "tashi-scheduler"),
    "accounting": ("service", "tashi-accounting"),
    "cm": ("service", "tashi-cm"),
}


class World:
    def __init__(self, tmp: Path) -> None:
        self.site = Site(tmp)
        cm_cert, cm_key = issue(self.site.dir, "service", "tashi-cm")
        self.icm = InProcCM(tmp, tls_ca=str(self.site.dir / "ca.pem"), tls_cert=str(cm_cert),
                            tls_key=str(cm_key), token_listen="127.0.0.1:0")
        running = self.icm.cm.running
        assert running is not None
        self.token_address = f"127.0.0.1:{running.token_port}"
        self.clients: dict[str, ClusterClient] = {}
        self.target: pb.Instance | None = None
        for label, (kind, name) in IDENTITIES.items():
            self.clients[label] = ClusterClient(self.icm.address, user=name, timeout=5,
                                                tls=self.site.tls(kind, name))
        stranger = self.site.tls("user", "root", ca_dir=self.site.other)
        self.clients["stranger"] = ClusterClient(self.icm.address, user="root", timeout=5,
                                                 tls=stranger)
        self.nocert = grpc.secure_channel(
            self.icm.address, grpc.ssl_channel_credentials((self.site.dir / "ca.pem").read_bytes()))
        admin = self.clients["admin"]
        for name in ("alice", "bob"):
            admin.create_user(name)
        admin.create_host("h1")
        admin.create_host("h2")
        self.h1 = self.node_register("node-h1", "h1").host.id
        self.h2 = self.node_register("node-h2", "h2").host.id
        [self.alices] = self.clients["alice"].create_instances(vm("alices", 1, 64))

    def node_register(self, label: str, host: str) -> nr.RegisterHostResponse:
        c = self.clients[label]
        return c.call(c.registry.RegisterHost, nr.RegisterHostRequest(
            name=host, cores=8, memory_mib=8192, version="0.1.0", nm_address=""))

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        self.nocert.close()
        self.icm.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


Call = Callable[[World, ClusterClient], object]


def create(w: World, c: ClusterClient) -> object:
    return c.create_instances(vm(f"n{w.icm.cluster.events.last_seq}", 1, 64))


def list_instances(w: World, c: ClusterClient) -> object:
    return c.list_instances()


def create_host(w: World, c: ClusterClient) -> object:
    return c.create_host(f"x{w.icm.cluster.events.last_seq}")


def place(w: World, c: ClusterClient) -> object:
    return c.activate([pl.Placement(instance_id=w.alices.id, host_id=w.h1)])


def register_h1(w: World, c: ClusterClient) -> object:
    return c.call(c.registry.RegisterHost, nr.RegisterHostRequest(
        name="h1", cores=8, memory_mib=8192, version="0.1.0"))


def heartbeat_h1(w: World, c: ClusterClient) -> object:
    return c.call(c.registry.Heartbeat, nr.HeartbeatRequest(name="h1"))


def watch(w: World, c: ClusterClient) -> object:
    with c.watch_events(0, timeout=2) as stream:
        return next(stream)


def list_networks(w: World, c: ClusterClient) -> object:
    return c.list_networks()


def delete_alices(w: World, c: ClusterClient) -> object:
    return c.instance_action("Delete", w.target.id)


def new_target(w: World) -> None:
    """A fresh instance of alice's for each caller to try to delete."""
    [w.target] = w.clients["alice"].create_instances(
        vm(f"t{w.icm.cluster.events.last_seq}", 1, 64))


D, U = C.PERMISSION_DENIED, C.UNAVAILABLE
# identity -> expected code, per call (UNAVAILABLE: the TLS handshake refused it).
TABLE: dict[str, tuple[Call, dict[str, grpc.StatusCode]]] = {
    "CreateInstance": (create, dict(admin=OK, alice=OK, bob=OK, **{
        "node-h1": D, "node-h2": D}, scheduler=D, accounting=D, cm=D, stranger=U)),
    "ListInstances": (list_instances, dict(admin=OK, alice=OK, bob=OK, **{
        "node-h1": D, "node-h2": D}, scheduler=OK, accounting=OK, cm=D, stranger=U)),
    "CreateHost": (create_host, dict(admin=OK, alice=D, bob=D, **{
        "node-h1": D, "node-h2": D}, scheduler=D, accounting=D, cm=D, stranger=U)),
    "ActivateInstances": (place, dict(admin=OK, alice=D, bob=D, **{
        "node-h1": D, "node-h2": D}, scheduler=OK, accounting=D, cm=D, stranger=U)),
    # h1 is up with its own certificate: not even an admin's registers over it.
    "RegisterHost h1": (register_h1, dict(admin=D, alice=D, bob=D, **{
        "node-h1": OK, "node-h2": D}, scheduler=D, accounting=D, cm=D, stranger=U)),
    "Heartbeat h1": (heartbeat_h1, dict(admin=OK, alice=D, bob=D, **{
        "node-h1": OK, "node-h2": D}, scheduler=D, accounting=D, cm=D, stranger=U)),
    "WatchEvents": (watch, dict(admin=OK, alice=D, bob=D, **{
        "node-h1": OK, "node-h2": OK}, scheduler=OK, accounting=OK, cm=D, stranger=U)),
    "ListNetworks": (list_networks, dict(admin=OK, alice=OK, bob=OK, **{
        "node-h1": OK, "node-h2": OK}, scheduler=OK, accounting=OK, cm=D, stranger=U)),
    "DeleteInstance alice's": (delete_alices, dict(admin=OK, alice=OK, bob=D, **{
        "node-h1": D, "node-h2": D}, scheduler=D, accounting=D, cm=D, stranger=U)),
}


@pytest.mark.parametrize("call", sorted(TABLE))
def test_each_identity_gets_what_the_table_says(world: World, call: str) -> None:
    fn, expected = TABLE[call]
    for label, code in sorted(expected.items(), key=lambda kv: kv[1] == OK):
        if fn is delete_alices:
            new_target(world)
        seq = world.icm.cluster.events.last_seq
        try:
            fn(world, world.clients[label])
            got = OK
        except TashiError as exc:
            got = exc.code
        assert got == code, f"{call} as {label}: {got.name}, expected {code.name}"
        if code != OK:
            assert world.icm.cluster.events.last_seq == seq, f"{call} as {label} changed state"


def test_no_certificate_gets_nothing(world: World) -> None:
    stub = ClusterClient.__new__(ClusterClient)
    from tashi.v1 import cluster_manager_pb2_grpc as cm_grpc
    stub = cm_grpc.ClusterManagerServiceStub(world.nocert)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListInstances(cmpb.ListInstancesRequest(), timeout=5)
    assert err.value.code() == C.UNAVAILABLE  # type: ignore[attr-defined]


def test_a_header_makes_nobody_root(world: World) -> None:
    """Attack 1: alice's certificate with `x-tashi-user: root` is still alice."""
    alice = world.clients["alice"]
    seq = world.icm.cluster.events.last_seq
    with pytest.raises(grpc.RpcError) as err:
        alice.cm.CreateHost(cmpb.CreateHostRequest(name="evil"), timeout=5,
                            metadata=(("x-tashi-user", "root"),))
    assert err.value.code() == C.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "'alice' is not an admin" in err.value.details()  # type: ignore[attr-defined]
    assert world.icm.cluster.events.last_seq == seq


def test_host_hijack_is_refused(world: World, tmp_path: Path) -> None:
    """Attack 3: another node's certificate registering as h1, a second certificate
    for h1 while it is up are refused; forged reports about h1's instance change
    nothing; h1's instance and address stay as they were."""
    w = world
    admin = w.clients["admin"]
    admin.activate([pl.Placement(instance_id=w.alices.id, host_id=w.h1)])
    h1 = w.clients["node-h1"]
    h1.call(h1.registry.ReportInstances, nr.ReportInstancesRequest(name="h1", reports=[
        nr.InstanceReport(instance_id=w.alices.id, vm_id="tashi-x",
                          state=pb.INSTANCE_STATE_RUNNING, report_seq=1)]))
    before = admin.get_instance(w.alices.id)
    assert before.status.state == pb.INSTANCE_STATE_RUNNING
    seq = w.icm.cluster.events.last_seq
    h2 = w.clients["node-h2"]
    with pytest.raises(TashiError) as err:
        h2.call(h2.registry.RegisterHost, nr.RegisterHostRequest(
            name="h1", cores=64, memory_mib=65536, version="0.1.0", nm_address="127.0.0.1:1"))
    assert err.value.code == C.PERMISSION_DENIED
    # Taken, so an honest node's stale report never blocks its others, but not applied.
    for forged in (pb.INSTANCE_STATE_EXITED, pb.INSTANCE_STATE_PAUSED, pb.INSTANCE_STATE_HELD):
        h2.call(h2.registry.ReportInstances, nr.ReportInstancesRequest(name="h2", reports=[
            nr.InstanceReport(instance_id=w.alices.id, state=forged, report_seq=5 + forged)]))
    impostor = ClusterClient(w.icm.address, timeout=5, tls=w.site.tls("node", "h1"))
    try:
        with pytest.raises(TashiError) as err:
            impostor.call(impostor.registry.RegisterHost, nr.RegisterHostRequest(
                name="h1", cores=64, memory_mib=65536, version="0.1.0",
                nm_address="127.0.0.1:1"))
        assert err.value.code == C.PERMISSION_DENIED and "another certificate" in \
            err.value.message
    finally:
        impostor.close()
    assert w.icm.cluster.events.last_seq == seq
    after = admin.get_instance(w.alices.id)
    assert after == before
    assert admin.get_host("h1").nm_address == ""


def test_request_ids_are_per_caller(world: World) -> None:
    alice, bob = world.clients["alice"], world.clients["bob"]
    [a] = alice.create_instances(vm("a-one", 1, 64), request_id="same")
    [b] = bob.create_instances(vm("b-one", 1, 64), request_id="same")
    assert (a.owner, b.owner) == ("alice", "bob") and a.id != b.id
    [again] = alice.create_instances(vm("a-one", 1, 64), request_id="same")
    assert again.id == a.id, "a retry by the same caller gets the first answer"


def test_other_users_instances_show_name_and_state_only(world: World) -> None:
    bob = world.clients["bob"]
    seen = bob.get_instance(world.alices.id)
    assert (seen.name, seen.status.state) == ("alices", pb.INSTANCE_STATE_PENDING)
    assert not seen.owner and not seen.HasField("spec") and not seen.status.host_id
    mine = world.clients["alice"].get_instance(world.alices.id)
    assert mine.owner == "alice" and mine.spec.cores == 1


def test_a_node_watch_is_its_own_hosts(world: World) -> None:
    h2 = world.clients["node-h2"]
    with pytest.raises(TashiError) as err:
        with h2.watch_events(0, host="h1", timeout=2) as stream:
            next(stream)
    assert err.value.code == C.PERMISSION_DENIED
    admin = world.clients["admin"]
    admin.activate([pl.Placement(instance_id=world.alices.id, host_id=world.h1)])
    got: list[pb.Event] = []
    with h2.watch_events(0, timeout=3) as stream:
        while stream.seq < world.icm.cluster.events.last_seq:
            got.extend(next(stream))
    assert got, "h2 hears of its own host"
    assert all(e.WhichOneof("subject") in ("host", "instance", "network") for e in got)
    assert all(world.h2 in e.host_ids for e in got if e.WhichOneof("subject") != "network")


@pytest.fixture
def nm(world: World, tmp_path: Path) -> Iterator[str]:
    """A node manager's service with h1's certificate, on a simulated host."""
    driver = LibvirtDriver("test://" + str(node_xml(tmp_path / "node.xml")), tmp_path,
                           tmp_path / "state")
    running = server.start("127.0.0.1:0", [server.Service(
        "tashi.v1.NodeManagerService", NodeManagerServicer(driver),
        nm_grpc.add_NodeManagerServiceServicer_to_server)], tls=world.site.tls("node", "h1"))
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(0)
        driver.close()


def test_the_node_manager_answers_the_cluster_manager_only(world: World, nm: str) -> None:
    """Attack 2: a user, another node and a stranger cannot list, destroy or send VMs."""
    site = world.site
    for label, tls, code in [
            ("alice", site.tls("user", "alice"), C.PERMISSION_DENIED),
            ("admin", site.tls("user", "root"), C.PERMISSION_DENIED),
            ("node-h2", site.tls("node", "h2"), C.PERMISSION_DENIED),
            ("scheduler", site.tls("service", "tashi-scheduler"), C.PERMISSION_DENIED),
            ("stranger", site.tls("service", "tashi-cm", ca_dir=site.other), C.UNAVAILABLE)]:
        with NodeManagerClient(nm, timeout=5, tls=tls) as client:
            for attempt in (lambda: list(client.list_vms()),
                            lambda: client.destroy_vm(nmpb.DestroyVmRequest(instance_id=1)),
                            lambda: client.send_vm(nmpb.SendVmRequest(
                                instance_id=1, target_uri="test:///etc/shadow"))):
                with pytest.raises(TashiError) as err:
                    attempt()
                assert err.value.code == code, label
                assert "root:" not in err.value.message
    with NodeManagerClient(nm, timeout=5, tls=site.tls("service", "tashi-cm")) as cm:
        assert list(cm.list_vms()) == []


# -- bearer tokens ----------------------------------------------------------------------


def token_client(w: World, token: str, address: str = "") -> ClusterClient:
    """A user with a token and no certificate: TLS that checks the server only."""
    return ClusterClient(address or w.token_address, user="root", timeout=5, token=token,
                         tls=Tls.ca_only(w.site.dir / "ca.pem"))


def test_a_token_speaks_for_its_user_until_revoked(world: World, tmp_path: Path) -> None:
    w = world
    admin = w.clients["admin"]
    issued = admin.issue_token("alice")
    assert issued.token.startswith("tashi_") and issued.info.user == "alice"
    with token_client(w, issued.token) as alice:
        [mine] = alice.create_instances(vm("by-token", 1, 64))
        assert mine.owner == "alice", "the token's user, whatever the header says (root)"
        with pytest.raises(TashiError) as err:
            alice.create_host("nope")
        assert err.value.code == C.PERMISSION_DENIED
        with pytest.raises(TashiError) as err:
            alice.call(alice.registry.RegisterHost, nr.RegisterHostRequest(
                name="h1", cores=1, memory_mib=1, version="0.1.0"))
        assert err.value.code == C.PERMISSION_DENIED, "a token is a user's, never a node's"
        with pytest.raises(TashiError) as err:
            alice.issue_token("alice")
        assert err.value.code == C.PERMISSION_DENIED, "only admins issue tokens"
        assert [t.id for t in alice.list_tokens()] == [issued.info.id]
        w.clients["bob"].create_instances(vm("bobs", 1, 64))
        with pytest.raises(TashiError) as err:
            w.clients["bob"].revoke_token(issued.info.id)
        assert err.value.code == C.PERMISSION_DENIED, "bob may not end alice's token"
        admin.revoke_token(issued.info.id)
        seq = w.icm.cluster.events.last_seq
        with pytest.raises(TashiError) as err:
            alice.create_instances(vm("after-revoke", 1, 64))
        assert err.value.code == C.UNAUTHENTICATED
        assert w.icm.cluster.events.last_seq == seq
    store = open_store(w.icm.cfg.db)
    loaded = store.load(recent=1 << 30)
    store.close()
    db = b"".join(b for bodies in loaded.resources.values() for b in bodies) + b"".join(
        body for _seq, body in loaded.recent_events)
    secret = issued.token.split("_", 2)[2]
    assert secret.encode() not in db, "only the token's hash is stored"


@pytest.mark.parametrize("token", ["", "garbage", "tashi_1_wrong", "tashi_999_x", "tashi__",
                                   "tashi_1_" + "A" * 100_000])
def test_a_bad_token_is_unauthenticated(world: World, token: str) -> None:
    world.clients["admin"].issue_token("alice")  # token 1 exists; its secret is not these
    with token_client(world, token) as c:
        with pytest.raises(TashiError) as err:
            c.list_instances()
        assert err.value.code in (C.UNAUTHENTICATED, C.RESOURCE_EXHAUSTED)


def test_a_token_does_not_open_the_certificate_port(world: World) -> None:
    issued = world.clients["admin"].issue_token("alice")
    with token_client(world, issued.token, world.icm.address) as c:
        with pytest.raises(TashiError) as err:
            c.list_instances()
        assert err.value.code == C.UNAVAILABLE
