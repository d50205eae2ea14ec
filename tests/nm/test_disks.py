"""The image store refuses paths outside it; overlays are real qcow2 files on their base."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tashi.nm.errors import InvalidArgument, NotFound
from tashi.nm.libvirt.disks import ImageStore, create_overlay


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
    assert store.image_format(base) == "qcow2"
    assert store.image_format(store.resolve("sub/raw.img")) == "raw"
    overlay = tmp_path / "state" / "overlays" / "o.qcow2"
    create_overlay(base, "qcow2", overlay)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"
