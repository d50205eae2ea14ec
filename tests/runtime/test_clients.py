"""The typed clients in tashi.runtime against real servers on loopback: responses
come back as messages, failures as TashiError with the status code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.nm.libvirt.driver import LibvirtDriver
from tashi.nm.servicer import NodeManagerServicer
from tashi.runtime import server
from tashi.runtime.errors import RETRY_AFTER_KEY
from tashi.runtime.nm_client import NodeManagerClient, NodeManagerClients
from tashi.runtime.rpc import TashiError, translate
from tashi.v1 import node_manager_pb2 as nm
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import resources_pb2 as pb
from tests.harness import free_port, node_xml

C = grpc.StatusCode


@pytest.fixture
def nm_served(tmp_path: Path) -> Iterator[tuple[str, LibvirtDriver]]:
    """A real NodeManagerService on a simulated libvirt host (test://)."""
    images = tmp_path / "images"
    images.mkdir()
    driver = LibvirtDriver("test://" + str(node_xml(tmp_path / "node.xml", 4, 4096)), images,
                           tmp_path / "state")
    running = server.start("127.0.0.1:0", [server.Service(
        "tashi.v1.NodeManagerService", NodeManagerServicer(driver),
        nm_grpc.add_NodeManagerServiceServicer_to_server)])
    try:
        yield f"127.0.0.1:{running.port}", driver
    finally:
        running.stop(0)
        driver.close()


def instance(iid: int) -> pb.Instance:
    return pb.Instance(id=iid, name=f"vm{iid}", owner="alice",
                       spec=pb.InstanceSpec(cores=1, memory_mib=256))


def test_node_manager_client_drives_a_vm(nm_served: tuple[str, LibvirtDriver]) -> None:
    address, _ = nm_served
    with NodeManagerClient(address, user="root", timeout=10) as client:
        started = client.start_vm(nm.StartVmRequest(request_id="s1", instance=instance(1)))
        assert isinstance(started, nm.StartVmResponse)
        assert started.vm.state == pb.INSTANCE_STATE_RUNNING
        paused = client.simple_action("pause", 1, request_id="p1")
        assert isinstance(paused, nm.PauseVmResponse)
        assert client.get_vm(1).state == pb.INSTANCE_STATE_PAUSED
        client.unpause_vm(nm.UnpauseVmRequest(request_id="u1", instance_id=1))
        client.start_vm(nm.StartVmRequest(request_id="s2", instance=instance(2)))
        assert [v.instance_id for v in client.list_vms(page_size=1)] == [1, 2]
        suspended = client.simple_action("suspend", 2, request_id="x2")
        assert isinstance(suspended, nm.SuspendVmResponse) and suspended.suspend_file
        resumed = client.resume_vm(nm.ResumeVmRequest(
            request_id="r2", instance=instance(2), suspend_file=suspended.suspend_file))
        assert resumed.vm.state == pb.INSTANCE_STATE_RUNNING
        client.destroy_vm(nm.DestroyVmRequest(request_id="d1", instance_id=1))
        assert [v.instance_id for v in client.list_vms()] == [2]


def test_node_manager_client_raises_the_status(nm_served: tuple[str, LibvirtDriver]) -> None:
    address, _ = nm_served
    with NodeManagerClient(address, timeout=10) as client:
        with pytest.raises(TashiError) as err:
            client.destroy_vm(nm.DestroyVmRequest(request_id="d9", instance_id=9))
        assert err.value.code == C.NOT_FOUND
        with pytest.raises(TashiError) as err:
            client.simple_action("pause", 0, request_id="p0")
        assert err.value.code == C.INVALID_ARGUMENT and "positive" in err.value.message
        with pytest.raises(ValueError):
            client.simple_action("explode", 1, request_id="e1")


def test_a_node_manager_crash_reaches_the_caller_as_internal_with_an_id(
        nm_served: tuple[str, LibvirtDriver], monkeypatch: pytest.MonkeyPatch) -> None:
    address, driver = nm_served

    def broken(instance_id: int) -> object:
        raise KeyError(instance_id)

    monkeypatch.setattr(driver, "get_vm", broken)
    with NodeManagerClient(address, timeout=10) as client, \
            pytest.raises(TashiError) as err:
        client.get_vm(3)
    assert err.value.code == C.INTERNAL
    assert re.fullmatch(r"internal error; id [0-9a-f]{8}", err.value.message)


def test_an_absent_node_manager_is_unavailable() -> None:
    with NodeManagerClient(f"127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(TashiError) as err:
            client.get_vm(1)
        assert err.value.code == C.UNAVAILABLE
        with pytest.raises(TashiError) as err:
            client.wait_ready(timeout=0.2)
        assert err.value.code == C.UNAVAILABLE and "node manager" in err.value.message


def test_one_client_per_node_manager_address() -> None:
    clients = NodeManagerClients(user="admin", timeout=7)
    a = clients.get("127.0.0.1:1")
    assert clients.get("127.0.0.1:1") is a
    b = clients.get("127.0.0.1:2")
    assert b is not a and (b.user, b.timeout) == ("admin", 7)
    clients.close()
    assert clients.get("127.0.0.1:1") is not a, "closed clients are not handed out again"
    clients.close()


class _Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...]) -> None:
        self._code, self._trailing = code, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "busy"

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


def test_a_servers_try_again_after_is_read_within_bounds() -> None:
    """A busy server's "try again after" is honoured up to 2 s (a hostile one cannot
    park its callers), and only on RESOURCE_EXHAUSTED with a well-formed number."""
    busy = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert translate(_Refused(busy, ((RETRY_AFTER_KEY, "50"),))).retry_after == 0.05
    assert translate(_Refused(busy, ((RETRY_AFTER_KEY, "9" * 40),))).retry_after == 2.0
    assert translate(_Refused(busy, ((RETRY_AFTER_KEY, "-5"),))).retry_after == 0.0
    assert translate(_Refused(busy, ((RETRY_AFTER_KEY, "1e9"),))).retry_after == 0.0
    assert translate(_Refused(busy, ())).retry_after == 0.0
    assert translate(_Refused(grpc.StatusCode.INTERNAL,
                              ((RETRY_AFTER_KEY, "50"),))).retry_after == 0.0


@pytest.mark.parametrize("hint_ms", [20, 1000])
def test_a_refused_call_is_sent_again_soon_after_a_brief_refusal(
        monkeypatch: pytest.MonkeyPatch, hint_ms: int) -> None:
    """The wait between tries doubles from the server's "try again after", but only
    up to a quarter second unless the server asked for longer itself."""
    from tashi.runtime import rpc
    pauses: list[float] = []
    monkeypatch.setattr(rpc.time, "sleep", pauses.append)
    refused = 12

    def method(request: object, timeout: float, metadata: object) -> str:
        if len(pauses) < refused:
            raise _Refused(C.RESOURCE_EXHAUSTED, ((RETRY_AFTER_KEY, str(hint_ms)),))
        return "answered"

    client = NodeManagerClient("127.0.0.1:1", timeout=60)
    try:
        assert client.call(method, None) == "answered"
    finally:
        client.close()
    hint = hint_ms / 1000
    assert len(pauses) == refused
    assert all(0.5 * hint <= p <= 1.5 * max(hint, rpc.DOUBLED_UP_TO) for p in pauses), pauses
    if hint < rpc.DOUBLED_UP_TO:
        assert pauses[0] <= 1.5 * hint and max(pauses) > 1.5 * hint, "it doubles"
