"""A start whose answer does not come (the call timed out, the connection
broke) may have run all the same.  The CM asks the host once more before it
holds the instance; holding it would let the scheduler place it again on
another host while the first one runs it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tashi.cm import dispatch
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, activate, register_host, serving_nm, vm, wait_for

S = pb


class LossyNM(nm_grpc.NodeManagerServiceServicer):
    """Starts every VM it is asked for (again and again: idempotent), but the
    first `lose` calls end with `code` instead of the answer."""

    def __init__(self) -> None:
        self.lose, self.code = 0, grpc.StatusCode.UNAVAILABLE
        self.calls = 0
        self.running: set[int] = set()
        self._lock = threading.Lock()

    def StartVms(self, request: nmpb.StartVmsRequest, context: Any) -> nmpb.StartVmsResponse:
        with self._lock:
            self.calls += 1
            calls = self.calls
        if self.code == grpc.StatusCode.INVALID_ARGUMENT and calls <= self.lose:
            context.abort(self.code, "refused before it started anything")
        self.running.update(s.instance.id for s in request.starts)
        if calls <= self.lose:
            context.abort(self.code, "the answer was lost")
        return nmpb.StartVmsResponse(results=[nmpb.StartVmResult(
            instance_id=s.instance.id, vm=nmpb.VmInfo(
                instance_id=s.instance.id, vm_id=f"tashi-{s.instance.id}",
                state=S.INSTANCE_STATE_RUNNING)) for s in request.starts])


@pytest.fixture
def nm() -> Iterator[tuple[LossyNM, str]]:
    servicer = LossyNM()
    with serving_nm(servicer) as address:
        yield servicer, address


def settled(icm: InProcCM, iid: int) -> pb.Instance:
    root = icm.client()
    return wait_for(lambda: (i := root.get_instance(iid)).status.state not in (
        S.INSTANCE_STATE_ACTIVATING,) and i, what=f"instance {iid} settled", timeout=15)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_lost_answer_is_asked_for_again(icm: InProcCM, nm: tuple[LossyNM, str],
                                          code: grpc.StatusCode) -> None:
    servicer, address = nm
    servicer.lose, servicer.code = 1, code
    root = icm.client()
    host = register_host(root, "h1", nm_address=address).host
    [inst] = root.create_instances(vm("lost"))
    activate(root, inst.id, host.id)
    got = settled(icm, inst.id)
    assert (got.status.state, got.status.host_id, got.status.vm_id) == (
        S.INSTANCE_STATE_RUNNING, host.id, f"tashi-{inst.id}")
    assert servicer.calls == 2 and servicer.running == {inst.id}


def test_held_when_the_second_answer_does_not_come_either(
        icm: InProcCM, nm: tuple[LossyNM, str]) -> None:
    servicer, address = nm
    servicer.lose, servicer.code = 2, grpc.StatusCode.DEADLINE_EXCEEDED
    root = icm.client()
    host = register_host(root, "h1", nm_address=address).host
    [inst] = root.create_instances(vm("silent"))
    activate(root, inst.id, host.id)
    got = settled(icm, inst.id)
    assert got.status.state == S.INSTANCE_STATE_HELD and "the answer was lost" in \
        got.status.reason
    assert servicer.calls == 2


def test_a_refusal_is_not_asked_again(icm: InProcCM, nm: tuple[LossyNM, str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    servicer, address = nm
    servicer.lose, servicer.code = 1, grpc.StatusCode.INVALID_ARGUMENT
    monkeypatch.setattr(dispatch, "ASK_AGAIN_SECONDS", 0.0)
    root = icm.client()
    host = register_host(root, "h1", nm_address=address).host
    [inst] = root.create_instances(vm("refused"))
    activate(root, inst.id, host.id)
    got = settled(icm, inst.id)
    assert got.status.state == S.INSTANCE_STATE_HELD and "refused before" in got.status.reason
    assert servicer.calls == 1 and not servicer.running
