"""The image store refuses paths outside it; overlays are real qcow2 files on their base."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tashi.nm.errors import InvalidArgument, NotFound
from tashi.nm.libvirt.disks import ImageStore, Overlays, create_overlay
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


def qemu_info(path: Path) -> dict[str, object]:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)


def meaning(path: Path) -> tuple[object, ...]:
    """What an overlay is, as qemu-img reads it: its format, backing file and format,
    virtual size, cluster size, and whether it is clean and complete."""
    info = qemu_info(path)
    subprocess.run(["qemu-img", "check", "-q", str(path)], check=True)  # fails on damage
    return (info["format"], info["backing-filename"], info["backing-filename-format"],
            info["virtual-size"], info["cluster-size"], info.get("dirty-flag"))


def test_an_overlay_is_the_same_bytes_wherever_it_is(store: ImageStore, tmp_path: Path) -> None:
    """What the template copies rest on: qemu-img writes nothing of the overlay's own
    path, name or time into it."""
    base = store.resolve("base.qcow2")
    create_overlay(base, "qcow2", tmp_path / "a" / "one.qcow2")
    create_overlay(base, "qcow2", tmp_path / "b" / "two.qcow2")
    assert (tmp_path / "a" / "one.qcow2").read_bytes() == \
        (tmp_path / "b" / "two.qcow2").read_bytes()


def test_copied_overlays_mean_what_qemu_img_made(store: ImageStore, tmp_path: Path) -> None:
    """Overlays from the template: one qemu-img per base, the rest byte for byte what
    qemu-img would have written, holes kept, each on its own base."""
    overlays = Overlays(tmp_path / "ov")
    base = store.resolve("base.qcow2")
    raw = store.resolve("sub/raw.img")
    by_qemu_img = tmp_path / "ref" / "q.qcow2"
    create_overlay(base, "qcow2", by_qemu_img)
    for i in range(3):
        overlays.create(base, "qcow2", tmp_path / "ov" / f"vm{i}.qcow2")
    overlays.create(raw, "raw", tmp_path / "ov" / "r.qcow2")
    assert overlays.made == 2, "one qemu-img per base, the other overlays copied"
    for i in range(3):
        made = tmp_path / "ov" / f"vm{i}.qcow2"
        assert made.read_bytes() == by_qemu_img.read_bytes()
        assert meaning(made) == ("qcow2", str(base), "qcow2", 16 << 20, 65536, False)
        assert made.stat().st_blocks * 512 <= 4 * 65536, "written sparse, as qemu-img does"
    assert meaning(tmp_path / "ov" / "r.qcow2") == ("qcow2", str(raw), "raw", 65536, 65536,
                                                    False)
    assert not list((tmp_path / "ov").glob(".template-*")), "no scratch file left"
    # A guest writes to its overlay without touching the others or the base.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k",
                    str(tmp_path / "ov" / "vm0.qcow2")], check=True, capture_output=True)
    assert meaning(tmp_path / "ov" / "vm0.qcow2")[0] == "qcow2"
    assert (tmp_path / "ov" / "vm1.qcow2").read_bytes() == by_qemu_img.read_bytes()


def test_a_changed_base_gets_a_new_template(store: ImageStore, tmp_path: Path) -> None:
    """A base resized (or otherwise rewritten) in place is another version: overlays
    made after carry its new size, as qemu-img would have given them."""
    overlays = Overlays(tmp_path / "ov")
    base = store.resolve("base.qcow2")
    overlays.create(base, "qcow2", tmp_path / "ov" / "before.qcow2")
    subprocess.run(["qemu-img", "resize", "-q", str(base), "32M"], check=True)
    overlays.create(base, "qcow2", tmp_path / "ov" / "after.qcow2")
    assert overlays.made == 2
    assert meaning(tmp_path / "ov" / "after.qcow2")[3] == 32 << 20
    assert meaning(tmp_path / "ov" / "before.qcow2")[3] == 16 << 20


def test_an_overlay_left_by_a_dead_start_is_replaced(store: ImageStore, tmp_path: Path) -> None:
    overlays = Overlays(tmp_path / "ov")
    stale = tmp_path / "ov" / "vm.qcow2"
    stale.parent.mkdir()
    stale.write_bytes(b"x" * 300_000)
    overlays.create(store.resolve("base.qcow2"), "qcow2", stale)
    assert meaning(stale)[0] == "qcow2" and stale.stat().st_size < 300_000
