"""The image store refuses paths outside it; overlays are real qcow2 files on their base."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tashi.nm.errors import InvalidArgument, NotFound
from tashi.nm.libvirt.disks import ImageStore, create_overlay
from tashi.nm.libvirt.plan import plan_start
from tashi.nm.model import DiskSpec, VmSpec


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "base.qcow2"),
                    "16M"], check=True)
    (images / "sub" / "raw.img").write_bytes(b"\0" * 65536)
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", images / "escape.img")
    return ImageStore(images)


def test_resolves_inside_the_store(store: ImageStore) -> None:
    assert store.resolve("base.qcow2") == store.root / "base.qcow2"
    assert store.resolve("sub/raw.img") == store.root / "sub" / "raw.img"
    assert store.resolve(str(store.root / "base.qcow2")) == store.root / "base.qcow2"


@pytest.mark.parametrize("uri", ["../secret", "sub/../../secret", "/etc/passwd", "escape.img", ""])
def test_refuses_paths_outside(store: ImageStore, uri: str) -> None:
    with pytest.raises(InvalidArgument):
        store.resolve(uri)


def test_missing_image_is_not_found(store: ImageStore) -> None:
    with pytest.raises(NotFound, match="missing.qcow2"):
        store.resolve("missing.qcow2")
    with pytest.raises(NotFound):
        store.resolve("sub")  # a directory is not an image


def test_formats_and_overlay(store: ImageStore, tmp_path: Path) -> None:
    base = store.resolve("base.qcow2")
    assert store.checked_format(base) == "qcow2"
    assert store.checked_format(store.resolve("sub/raw.img")) == "raw"
    overlay = tmp_path / "state" / "overlays" / "o.qcow2"
    create_overlay(base, "qcow2", overlay)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"


def test_a_recorded_format_is_never_probed(store: ImageStore, tmp_path: Path) -> None:
    """A raw disk whose guest wrote a qcow2 header naming a file outside the store:
    opened as raw (the CM's record), it is only data; probed, it is refused."""
    disk = store.resolve("sub/raw.img")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(tmp_path / "secret"),
                    "-F", "raw", str(disk)], check=True)
    assert store.checked_format(disk, "raw") == "raw"
    with pytest.raises(InvalidArgument, match="outside the image store"):
        store.checked_format(disk)


def test_chains_stay_inside_and_only_raw_or_qcow2(store: ImageStore) -> None:
    child = store.root / "child.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
                    str(child)], check=True)
    assert store.checked_format(child, "qcow2") == "qcow2"
    vmdk = store.root / "d.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "1M"], check=True)
    with pytest.raises(InvalidArgument, match="only raw and qcow2"):
        store.checked_format(vmdk)


def test_the_domain_opens_disks_with_the_recorded_format(store: ImageStore,
                                                         tmp_path: Path) -> None:
    disk = store.resolve("sub/raw.img")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "../base.qcow2", "-F",
                    "qcow2", str(disk)], check=True)  # looks like qcow2 now; recorded raw
    spec = VmSpec(instance_id=7, name="p", owner="alice", cores=1, memory_mib=64,
                  disks=(DiskSpec("sub/raw.img", persistent=True, fmt="raw"),
                         DiskSpec("sub/raw.img", fmt="raw")))
    plan = plan_start(spec, "tashi-7", store, tmp_path / "ov", tmp_path / "con", "qemu")
    assert [d.fmt for d in plan.config.disks] == ["raw", "qcow2"]
    assert plan.overlays[0].fmt == "raw", "the overlay names its base's format: -F raw"
