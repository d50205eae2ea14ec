"""The image catalogue (issue 12, disks): formats recorded once and passed
explicitly, chains kept inside the store, one file one image however it is
named, persistent use for the owner only.  Each test failed on the code before."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.runtime.client import TashiError
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, activate, inproc_cm, register_host, vm

C = grpc.StatusCode


@pytest.fixture
def cmx(tmp_path: Path) -> Iterator[InProcCM]:
    with inproc_cm(tmp_path) as cm:
        cm.client().create_user("alice")
        cm.client().create_user("bob")
        yield cm


def qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def disk_vm(name: str, uri: str, persistent: bool = False) -> pb.Instance:
    return vm(name, disks=[pb.Disk(uri=uri, persistent=persistent)])


def refused(call, code: grpc.StatusCode, text: str = "") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(TashiError) as err:
        call()
    assert err.value.code == code, err.value
    assert text in err.value.message, err.value.message
    return err.value.message


def test_format_is_recorded_once_and_passed(cmx: InProcCM) -> None:
    images = Path(cmx.cfg.images)
    alice = cmx.client("alice")
    cmx.client().add_image("sub/data.img", owner="alice")
    first = alice.create_instances(disk_vm("a", "sub/data.img", persistent=True))[0]
    assert first.spec.disks[0].format == "raw"
    # The guest writes a qcow2 header naming /etc/shadow into its raw disk ...
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw",
             images / "sub" / "data.img")
    # ... and the next instance still opens the disk as raw: nothing is chained in.
    again = alice.create_instances(disk_vm("b", "sub/data.img"))[0]
    assert again.spec.disks[0].format == "raw"
    listed = {i.name: i for i in alice.list_images()}
    assert listed["sub/data.img"].format == "raw" and listed["sub/data.img"].in_use == 2


def test_images_leading_out_of_the_store_are_refused(cmx: InProcCM) -> None:
    images = Path(cmx.cfg.images)
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
             images / "evil.qcow2")
    qemu_img("create", "-q", "-f", "vmdk", images / "disk.vmdk", "1M")
    alice = cmx.client("alice")
    seq = cmx.cluster.events.last_seq
    refused(lambda: alice.create_instances(disk_vm("e", "evil.qcow2")), C.INVALID_ARGUMENT,
            "backed by a file outside the image store")
    refused(lambda: alice.create_instances(disk_vm("v", "disk.vmdk")), C.INVALID_ARGUMENT,
            "only raw and qcow2")
    refused(lambda: cmx.client().add_image("evil.qcow2"), C.INVALID_ARGUMENT, "outside")
    assert cmx.cluster.events.last_seq == seq and not cmx.cluster.instances
    assert not cmx.cluster.image_records, "nothing refused enters the catalogue"


def test_one_file_is_one_image_however_named(cmx: InProcCM) -> None:
    images = Path(cmx.cfg.images)
    qemu_img("create", "-q", "-f", "qcow2", images / "mine.qcow2", "1M")
    (images / "alias.qcow2").symlink_to(images / "mine.qcow2")
    root, alice = cmx.client(), cmx.client("alice")
    root.add_image("mine.qcow2", owner="alice")
    host = register_host(root, "h1").host.id
    a = alice.create_instances(disk_vm("a", "./mine.qcow2", persistent=True))[0]
    b = alice.create_instances(disk_vm("b", "alias.qcow2", persistent=True))[0]
    c = alice.create_instances(disk_vm("c", ".//mine.qcow2"))[0]
    assert {x.spec.disks[0].uri for x in (a, b, c)} == {"mine.qcow2"}
    activate(root, a.id, host)
    for other in (b, c):  # in place by another, or as a base under a disk written in place
        res = root.activate([pl.Placement(instance_id=other.id, host_id=host)]).results[0]
        assert not res.accepted and "mine.qcow2 is in use by 'a'" in res.reason


def test_persistent_use_is_for_the_owner(cmx: InProcCM) -> None:
    root, alice, bob = cmx.client(), cmx.client("alice"), cmx.client("bob")
    root.add_image("sub/data.img", owner="alice")
    refused(lambda: bob.create_instances(disk_vm("x", "sub/data.img", persistent=True)),
            C.PERMISSION_DENIED, "'alice''s")
    overlay = bob.create_instances(disk_vm("y", "sub/data.img"))[0]  # an overlay on it is fine
    assert overlay.owner == "bob" and not overlay.spec.disks[0].persistent
    # A site image (no owner): admins only, in place.
    refused(lambda: alice.create_instances(disk_vm("z", "base.qcow2", persistent=True)),
            C.PERMISSION_DENIED, "site image")
    site = root.create_instances(disk_vm("z", "base.qcow2", persistent=True))[0]
    assert site.spec.disks[0].persistent and site.spec.disks[0].format == "qcow2"
    # Owners are set by admins only.
    refused(lambda: alice.add_image("base.qcow2", owner="alice"), C.PERMISSION_DENIED)
    refused(lambda: root.add_image("../etc/passwd"), C.INVALID_ARGUMENT)
    refused(lambda: root.add_image("base.qcow2", owner="mallory"), C.UNAUTHENTICATED)
    assert {i.name: i.owner for i in root.list_images()}["sub/data.img"] == "alice"


def test_an_image_backing_another_is_not_written_in_place(cmx: InProcCM) -> None:
    images = Path(cmx.cfg.images)
    root = cmx.client()
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
             images / "child.qcow2")
    child = root.add_image("child.qcow2", owner="alice")
    assert child.backing == "base.qcow2" and child.format == "qcow2"
    refused(lambda: root.create_instances(disk_vm("w", "base.qcow2", persistent=True)),
            C.FAILED_PRECONDITION, "backs 'child.qcow2'")
    listed = {i.name: i for i in root.list_images()}
    assert listed["base.qcow2"].in_use == 1 and listed["child.qcow2"].owner == "alice"


def test_without_an_image_store_persistent_disks_are_for_admins(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, images="") as cm:
        cm.client().create_user("alice")
        refused(lambda: cm.client("alice").create_instances(disk_vm("p", "x.img", True)),
                C.PERMISSION_DENIED, "no image store")
        made = cm.client("alice").create_instances(disk_vm("q", "./x.img"))[0]
        assert made.spec.disks[0].uri == "x.img" and made.spec.disks[0].format == ""
