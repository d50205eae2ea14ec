"""The answers of a host's StartVms call: applied in one transaction, each only
if its instance is still Activating on the host the call went to."""

from __future__ import annotations

import grpc
import pytest

from tashi.runtime.rpc import TashiError
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, activate, register_host, vm

S = pb


def test_answers_apply_together_and_only_where_the_call_left_them(
        icm: InProcCM, monkeypatch: pytest.MonkeyPatch) -> None:
    root = icm.client()
    h1 = register_host(root, "h1").host  # no node manager address: nothing is called
    h2 = register_host(root, "h2").host
    a, b, c, d, e, f = (root.create_instances(vm(n))[0] for n in "abcdef")
    for inst, host in ((a, h1), (b, h1), (c, h2), (d, h1)):
        activate(root, inst.id, host.id)
    root.instance_action("Delete", d.id)  # gone from Activating while the call was out
    d_state = root.get_instance(d.id).status.state
    assert d_state != S.INSTANCE_STATE_ACTIVATING
    root.instance_action("Delete", e.id)  # Pending: gone at once
    cluster, dispatcher = icm.cluster, icm.cm.dispatcher
    ended: list[tuple[int, int]] = []
    monkeypatch.setattr(dispatcher, "end_stray", lambda hid, iid: ended.append((hid, iid)))
    before = cluster._commits
    dispatcher._started(h1, [
        (e.id, nmpb.VmInfo(instance_id=e.id, vm_id="z", state=S.INSTANCE_STATE_RUNNING)),
        (f.id, nmpb.VmInfo(instance_id=f.id, vm_id="w", state=S.INSTANCE_STATE_RUNNING)),
        (a.id, nmpb.VmInfo(instance_id=a.id, vm_id=f"tashi-{a.id}",
                           state=S.INSTANCE_STATE_RUNNING)),
        (b.id, TashiError(grpc.StatusCode.FAILED_PRECONDITION, "needs 9 cores; 2 free")),
        (c.id, nmpb.VmInfo(instance_id=c.id, vm_id="x", state=S.INSTANCE_STATE_RUNNING)),
        (d.id, nmpb.VmInfo(instance_id=d.id, vm_id="y", state=S.INSTANCE_STATE_RUNNING)),
    ])
    assert cluster._commits == before + 1, "one transaction for the host's answers"
    got = {i: root.get_instance(i) for i in (a.id, b.id, c.id)}
    assert (got[a.id].status.state, got[a.id].status.vm_id) == (
        S.INSTANCE_STATE_RUNNING, f"tashi-{a.id}")
    assert got[b.id].status.state == S.INSTANCE_STATE_HELD
    assert "needs 9 cores" in got[b.id].status.reason and "h1" in got[b.id].status.reason
    assert got[b.id].status.host_id == 0, "a held instance no longer holds h1's capacity"
    # c is placed on h2: an answer from h1 about it is not its own.
    assert (got[c.id].status.state, got[c.id].status.vm_id) == (S.INSTANCE_STATE_ACTIVATING, "")
    assert root.get_instance(d.id).status.state == d_state, "a late answer revives nothing"
    assert root.get_host("h1").used_cores == 2, "a, and d until its delete ends; not b"
    assert ended == [(h1.id, e.id), (h1.id, c.id)], \
        "what h1 ran for a deleted instance, and for one placed on h2, is ended there"
    assert root.get_instance(f.id).status.state == S.INSTANCE_STATE_PENDING, \
        "one waiting for a host is not ended: h1's report finds it running there"
