"""Placement's disk check from the cluster's index of placed instances' images
(built from the store at start, kept with every change): an image used in place
is used by nobody else, and an overlay's base is never written in place."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc

from tashi.runtime.rpc import TashiError
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, activate, register_host, vm


def place(cm: InProcCM, iid: int, host: int) -> pl.PlacementResult:
    return cm.client().activate([pl.Placement(instance_id=iid, host_id=host)]).results[0]


def test_disk_users_are_known_without_a_scan_and_after_a_restart(tmp_path: Path) -> None:
    cm = InProcCM(tmp_path)
    try:
        images = Path(cm.cfg.images)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "mine.qcow2"),
                        "1M"], check=True)
        root = cm.client()
        root.create_user("alice")
        alice = cm.client("alice")
        root.add_image("mine.qcow2", owner="alice")
        h1 = register_host(root, "h1").host
        a, b = (alice.create_instances(vm(n, disks=[pb.Disk(uri="mine.qcow2")]))[0]
                for n in "ab")
        p = alice.create_instances(vm("p", disks=[pb.Disk(uri="mine.qcow2",
                                                          persistent=True)]))[0]
        activate(root, a.id, h1.id)
        activate(root, b.id, h1.id)  # overlays share their base
        cm.cm.dispatcher._started(h1, [
            (a.id, nmpb.VmInfo(instance_id=a.id, vm_id=f"tashi-{a.id}",
                               state=pb.INSTANCE_STATE_RUNNING)),
            (b.id, TashiError(grpc.StatusCode.UNAVAILABLE, "no answer"))])  # b leaves h1
        res = place(cm, p.id, h1.id)
        assert not res.accepted and "mine.qcow2 is in use by 'a' as a base image" in res.reason
    finally:
        cm.stop()
    cm = InProcCM(tmp_path)  # the index is built again from the store
    try:
        root = cm.client()
        running = nr.InstanceReport(instance_id=a.id, state=pb.INSTANCE_STATE_RUNNING,
                                    vm_id=f"tashi-{a.id}")
        h1 = register_host(root, "h1", add=False, instances=[running]).host
        assert cm.cluster.instances[a.id].status.state == pb.INSTANCE_STATE_RUNNING
        res = place(cm, p.id, h1.id)
        assert not res.accepted and "mine.qcow2 is in use by 'a' as a base image" in res.reason
        register_host(root, "h1", add=False)  # h1 no longer runs a: it is gone
        assert a.id not in cm.cluster.instances and not cm.cluster.as_base
        assert place(cm, p.id, h1.id).accepted
        res = place(cm, b.id, h1.id)
        assert not res.accepted and "mine.qcow2 is in use by 'p' as its persistent disk" in \
            res.reason
    finally:
        cm.stop()
