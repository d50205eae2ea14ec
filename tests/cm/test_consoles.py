"""Consoles through the cluster manager (ReadConsole, AttachConsole): who may see
an instance's console, the proxy to its host's node manager, the bounds on open
streams, and what a node manager's refusal becomes.  The node manager here is
the real servicer over a fake driver (a log file, an echoing serial port); the
real guest is tests/nm/test_console_real_guest.py's."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tashi.nm.console import ConsoleLog, ConsoleSession
from tashi.nm.errors import NotFound
from tashi.nm.model import RUNNING, HostFacts, VmInfo, VmSpec
from tashi.nm.node import SERVICE_NAME
from tashi.nm.servicer import NodeManagerServicer
from tashi.runtime import server
from tashi.runtime.client import ClusterClient, ConsoleStream, TashiError
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tests.harness import InProcCM, activate, inproc_cm, register_host, vm, wait_for, wait_state
from tests.nm.test_metrics_driver_seam import FixedDriver

C = grpc.StatusCode


class Echo(ConsoleSession):
    """A serial port whose guest answers every line upper-cased."""

    def __init__(self) -> None:
        self.out: queue.Queue[bytes | None] = queue.Queue()
        self.closed = threading.Event()

    def recv(self, timeout: float) -> bytes | None:
        if self.closed.is_set():
            return None
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            return b""

    def send(self, data: bytes) -> bool:
        self.out.put(data.upper())
        return not self.closed.is_set()

    def close(self) -> None:
        self.closed.set()
        self.out.put(None)


class ConsoleDriver(FixedDriver):
    """Starts any VM (as running at once); its console is a file and an Echo."""

    def __init__(self, logs: Path) -> None:
        super().__init__([], {}, HostFacts(cores=8, memory_mib=16384, hypervisor="fake"))
        self.logs = logs
        self.running: set[int] = set()
        self.sessions: list[Echo] = []

    def start_vm(self, spec: VmSpec) -> VmInfo:
        self.running.add(spec.instance_id)
        return VmInfo(instance_id=spec.instance_id, vm_id=f"fake-{spec.instance_id}",
                      state=RUNNING, name=spec.name, owner=spec.owner, cores=spec.cores,
                      memory_mib=spec.memory_mib)

    def log_path(self, iid: int) -> Path:
        return self.logs / f"tashi-{iid}.log"

    def console_log(self, instance_id: int) -> ConsoleLog:
        if instance_id not in self.running and not self.log_path(instance_id).exists():
            raise NotFound(f"instance {instance_id} is not on this host")
        return ConsoleLog(self.log_path(instance_id), lambda: instance_id in self.running)

    def open_console(self, instance_id: int) -> ConsoleSession:
        if instance_id not in self.running:
            raise NotFound(f"instance {instance_id} is not running on this host")
        self.sessions.append(Echo())
        return self.sessions[-1]


@dataclass
class Site:
    cm: InProcCM
    driver: ConsoleDriver
    nm: server.Running
    iid: int  # alice's instance, running on h1


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A CM (at most 2 streams of a kind per caller), a node manager on h1, and
    alice's instance running there."""
    driver = ConsoleDriver(tmp_path)
    nm = server.start("127.0.0.1:0", [server.Service(
        SERVICE_NAME, NodeManagerServicer(driver),
        nm_grpc.add_NodeManagerServiceServicer_to_server)])
    try:
        with inproc_cm(tmp_path, expire_host_seconds=3600, watches_per_caller=2) as cm:
            root = cm.client()
            root.create_user("alice")
            root.create_user("bob")
            host = register_host(root, "h1", nm_address=f"127.0.0.1:{nm.port}").host
            [inst] = cm.client("alice").create_instances(vm("web"))
            activate(root, inst.id, host.id)
            wait_state(root, inst.id, RUNNING)
            driver.log_path(inst.id).write_bytes(b"TASHI-GUEST-UP\ntick 1\n")
            yield Site(cm, driver, nm, inst.id)
    finally:
        nm.stop(0)


def code_of(stream: ConsoleStream) -> C:
    with pytest.raises(TashiError) as err:
        next(stream)
    return err.value.code


def test_the_owner_and_admins_read_the_log_others_are_denied(
        site: Site) -> None:
    cm, iid = site.cm, site.iid
    alice, root, bob = cm.client("alice"), cm.client(), cm.client("bob")
    assert b"".join(alice.read_console(iid)) == b"TASHI-GUEST-UP\ntick 1\n"
    assert b"".join(alice.read_console("web", tail_bytes=7)) == b"tick 1\n"
    assert b"".join(root.read_console(iid)) == b"TASHI-GUEST-UP\ntick 1\n", "admins may"
    assert code_of(bob.read_console(iid)) == C.PERMISSION_DENIED
    assert code_of(bob.attach_console(iid, [b"ls\n"])) == C.PERMISSION_DENIED
    assert code_of(alice.read_console(iid, tail_bytes=-1)) == C.INVALID_ARGUMENT
    assert code_of(alice.read_console(999)) == C.NOT_FOUND
    [pending] = alice.create_instances(vm("nowhere"))
    assert code_of(alice.read_console(pending.id)) == C.FAILED_PRECONDITION


def test_follow_goes_on_until_the_vm_ends(site: Site) -> None:
    cm, driver, iid = site.cm, site.driver, site.iid
    got: list[bytes] = []
    stream = cm.client("alice").read_console(iid, follow=True)
    reader = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    reader.start()
    wait_for(lambda: b"tick 1" in b"".join(got), what="the log so far")
    with open(driver.log_path(iid), "ab") as fh:
        fh.write(b"tick 2\n")
    wait_for(lambda: b"tick 2" in b"".join(got), what="what the guest wrote next")
    driver.running.discard(iid)  # the VM ends: the follow ends by itself
    reader.join(10)
    assert not reader.is_alive()
    assert b"".join(got) == b"TASHI-GUEST-UP\ntick 1\ntick 2\n"


def test_attach_is_read_write_and_one_at_a_time(
        site: Site) -> None:
    cm, driver, iid = site.cm, site.driver, site.iid
    alice, root = cm.client("alice"), cm.client()
    typed: queue.Queue[bytes | None] = queue.Queue()
    session = alice.attach_console(iid, iter(typed.get, None))
    typed.put(b"echo hi\n")
    assert next(session) == b"ECHO HI\n"
    # a second session (even an admin's) is refused, never takes the console over
    assert code_of(root.attach_console(iid, [b"x"])) == C.FAILED_PRECONDITION
    typed.put(None)  # alice stops typing: the output still flows ...
    session.cancel()  # ... until she leaves, which ends the session at the node manager
    wait_for(lambda: driver.sessions[0].closed.is_set(), what="the first session closed")
    with root.attach_console(iid, [b"again\n"]) as second:
        assert next(second) == b"AGAIN\n"


def test_a_first_message_without_an_instance_is_invalid(
        site: Site) -> None:
    cm = site.cm
    alice = cm.client("alice")
    call = alice.cm.AttachConsole(iter([cmpb.AttachConsoleRequest(data=b"ls\n")]),
                                  metadata=alice._metadata)
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == C.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_bytes_that_are_no_message_are_invalid_argument_first_or_later(site: Site) -> None:
    """gRPC itself answers INTERNAL for a streamed request it cannot decode."""
    ch = site.cm.client()._channel
    ident = lambda b: b  # noqa: E731
    call = ch.stream_stream("/tashi.v1.ClusterManagerService/AttachConsole",
                            request_serializer=ident, response_deserializer=ident)
    first = cmpb.AttachConsoleRequest(instance=cmpb.InstanceRef(id=site.iid))
    for messages in ([b"\xff\xff\xff"], [first.SerializeToString(), b"\xff\xff\xff"]):
        with pytest.raises(grpc.RpcError) as err:
            list(call(iter(messages), timeout=10, metadata=(("x-tashi-user", "alice"),)))
        assert err.value.code() == C.INVALID_ARGUMENT, messages  # type: ignore[attr-defined]


def test_console_streams_are_bounded_per_caller(
        site: Site) -> None:
    cm, iid = site.cm, site.iid
    alice: ClusterClient = cm.client("alice")
    open_ = [alice.read_console(iid, follow=True) for _ in range(2)]
    try:
        for s in open_:
            next(s)  # each is open and being served
        assert code_of(alice.read_console(iid, follow=True)) == C.RESOURCE_EXHAUSTED
        assert code_of(alice.attach_console(iid, [])) == C.RESOURCE_EXHAUSTED
        with cm.client().read_console(iid, follow=True) as other:
            next(other)  # another caller is not held back
        assert cm.client().list_instances(), "unary calls go on"
        open_[0].cancel()
        again = wait_for(lambda: _opens(alice, iid), what="a closed stream frees its slot")
        again.cancel()
    finally:
        for s in open_:
            s.cancel()


def _opens(client: ClusterClient, iid: int) -> ConsoleStream | None:
    stream = client.read_console(iid, follow=True)
    try:
        next(stream)
    except TashiError as exc:
        assert exc.code == C.RESOURCE_EXHAUSTED
        return None
    return stream


def test_a_node_manager_away_is_unavailable(site: Site) -> None:
    site.nm.stop(0)
    assert code_of(site.cm.client("alice").read_console(site.iid)) == C.UNAVAILABLE
