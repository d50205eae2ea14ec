"""The image store and the qcow2 overlays a VM runs on.

A non-persistent disk runs on an overlay (`qemu-img create -f qcow2 -b base
-F fmt`) in the state dir, thrown away when the VM exits; a persistent disk is
the image itself, written in place.  Paths from the wire are resolved inside the
image store only: no `..`, no absolute path elsewhere, no symlink out.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tashi.nm.errors import HypervisorError, InvalidArgument, NotFound
from tashi.runtime import qemu_img


class ImageStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._formats: dict[tuple[str, int, int, str], str] = {}
        self._lock = threading.Lock()

    def resolve(self, uri: str, what: str = "disk") -> Path:
        """The file `uri` names inside the store, or a clear error."""
        if not uri or "\x00" in uri:
            raise InvalidArgument(f"{what} path is empty")
        rel = Path(uri)
        if ".." in rel.parts:
            raise InvalidArgument(f"{what} path {uri!r} may not contain '..'")
        candidate = rel if rel.is_absolute() else self.root / rel
        real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            raise InvalidArgument(f"{what} path {uri!r} is outside the image store {self.root}")
        if not real.is_file():
            raise NotFound(f"{what} image {uri!r} does not exist in the image store {self.root}")
        return real

    def checked_format(self, path: Path, fmt: str = "") -> str:
        """The format to open `path` with: `fmt` as the CM recorded it when the
        image entered the store (never probed then), else what qemu-img detects
        (a CM without an image store); either way the image and its backing
        chain are checked (tashi.runtime.qemu_img) before any guest gets it.
        Cached per file version."""
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size, fmt)
        with self._lock:
            cached = self._formats.get(key)
        if cached:
            return cached
        try:
            found = qemu_img.inspect(path, self.root, fmt).format
        except qemu_img.QemuImgError as exc:
            raise HypervisorError(str(exc)) from None
        except qemu_img.ImageRefused as exc:
            raise InvalidArgument(str(exc)) from None
        with self._lock:
            self._formats[key] = found
        return found


def create_overlay(base: Path, base_format: str, overlay: Path) -> None:
    overlay.parent.mkdir(parents=True, exist_ok=True)
    if overlay.exists():  # left by a start that died half-way; nothing runs on it
        overlay.unlink()
    try:
        qemu_img.run(["create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format,
                      str(overlay)])
    except qemu_img.QemuImgError as exc:
        raise HypervisorError(str(exc)) from None


def remove_files(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
