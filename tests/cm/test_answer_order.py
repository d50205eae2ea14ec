"""A node manager's report still in flight when its answer to an action came.

The NM numbers its reports and its answers from one clock.  The CM pauses a
VM; the NM's report that the VM runs, observed before the pause, is on its way
(a busy CM, a report call sent again) and arrives after the pause's answer:
applied, it would move the instance back to Running while the VM is paused.
A report numbered below the answer about the same instance is not applied;
one numbered after it is."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, activate, register_host, serving_nm, vm, wait_state

S = pb


class NumberingNM(nm_grpc.NodeManagerServiceServicer):
    """Does what it is asked and numbers each answer from its clock, as the real
    node manager does (tests/nm/test_reporter.py)."""

    def __init__(self) -> None:
        self.clock = itertools.count(1000, 1000)
        self._lock = threading.Lock()
        self.last = 0

    def _vm(self, iid: int, state: int) -> nmpb.VmInfo:
        with self._lock:
            self.last = next(self.clock)
        return nmpb.VmInfo(instance_id=iid, vm_id=f"tashi-{iid}", state=state,
                           report_seq=self.last)

    def StartVms(self, request: nmpb.StartVmsRequest, context: Any) -> nmpb.StartVmsResponse:
        return nmpb.StartVmsResponse(results=[nmpb.StartVmResult(
            instance_id=s.instance.id, vm=self._vm(s.instance.id, S.INSTANCE_STATE_RUNNING))
            for s in request.starts])

    def PauseVm(self, request: nmpb.PauseVmRequest, context: Any) -> nmpb.PauseVmResponse:
        return nmpb.PauseVmResponse(vm=self._vm(request.instance_id, S.INSTANCE_STATE_PAUSED))

    def UnpauseVm(self, request: nmpb.UnpauseVmRequest, context: Any) -> nmpb.UnpauseVmResponse:
        return nmpb.UnpauseVmResponse(vm=self._vm(request.instance_id,
                                                  S.INSTANCE_STATE_RUNNING))


@pytest.fixture
def nm() -> Iterator[tuple[NumberingNM, str]]:
    servicer = NumberingNM()
    with serving_nm(servicer) as address:
        yield servicer, address


def report(root, host: str, iid: int, state: int, seq: int) -> int:  # type: ignore[no-untyped-def]
    return int(root.call(root.registry.ReportInstances, nr.ReportInstancesRequest(
        name=host, reports=[nr.InstanceReport(instance_id=iid, vm_id=f"tashi-{iid}",
                                              state=state, report_seq=seq)])).applied_seq)


def test_a_report_from_before_an_answer_does_not_undo_it(
        icm: InProcCM, nm: tuple[NumberingNM, str]) -> None:
    servicer, address = nm
    root = icm.client()
    host = register_host(root, "h1", nm_address=address).host
    [inst] = root.create_instances(vm("a"))
    activate(root, inst.id, host.id)
    wait_state(root, inst.id, S.INSTANCE_STATE_RUNNING)
    started = servicer.last

    root.instance_action("Pause", inst.id)
    wait_state(root, inst.id, S.INSTANCE_STATE_PAUSED)
    paused = servicer.last
    # Observed between the start and the pause, delivered after the pause's answer.
    assert report(root, "h1", inst.id, S.INSTANCE_STATE_RUNNING, started + 1) == started + 1
    assert root.get_instance(inst.id).status.state == S.INSTANCE_STATE_PAUSED, \
        "a RUNNING seen before the pause undid it"

    root.instance_action("Unpause", inst.id)
    wait_state(root, inst.id, S.INSTANCE_STATE_RUNNING)
    assert report(root, "h1", inst.id, S.INSTANCE_STATE_PAUSED, paused + 1) == paused + 1
    assert root.get_instance(inst.id).status.state == S.INSTANCE_STATE_RUNNING, \
        "a PAUSED seen before the unpause undid it"

    # What the host sees after the answer is applied (paused on the host itself).
    later = servicer.last + 1
    assert report(root, "h1", inst.id, S.INSTANCE_STATE_PAUSED, later) == later
    assert root.get_instance(inst.id).status.state == S.INSTANCE_STATE_PAUSED
    # Once the host's reports passed the answer, the CM forgets its number.
    assert inst.id not in icm.cluster.answer_seqs


def test_what_the_cm_keeps_of_an_answer(icm: InProcCM, nm: tuple[NumberingNM, str]) -> None:
    """An answer's number is that node manager's clock, kept with its host: a
    report from another host about the instance is judged by the usual rules."""
    servicer, address = nm
    root = icm.client()
    host = register_host(root, "h1", nm_address=address).host
    register_host(root, "h2")
    [inst] = root.create_instances(vm("b"))
    activate(root, inst.id, host.id)
    wait_state(root, inst.id, S.INSTANCE_STATE_RUNNING)
    root.instance_action("Pause", inst.id)
    wait_state(root, inst.id, S.INSTANCE_STATE_PAUSED)
    assert icm.cluster.answer_seqs[inst.id] == (host.id, servicer.last)
    # h2 numbers from its own clock, far below h1's: the instance is on h1, so h2's
    # report is applied nowhere, yet h2's applied_seq moves on.
    assert report(root, "h2", inst.id, S.INSTANCE_STATE_RUNNING, 5) == 5
    got = root.get_instance(inst.id)
    assert (got.status.host_id, got.status.state) == (host.id, S.INSTANCE_STATE_PAUSED)
    # A start's answer is numbered after the VM ran (for registrations): it says
    # nothing of reports made while it started, which are applied.
    [other] = root.create_instances(vm("c"))
    activate(root, other.id, host.id)
    wait_state(root, other.id, S.INSTANCE_STATE_RUNNING)
    assert other.id not in icm.cluster.answer_seqs
