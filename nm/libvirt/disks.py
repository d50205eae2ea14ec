"""The image store and the qcow2 overlays a VM runs on.

A non-persistent disk runs on an overlay (`qemu-img create -f qcow2 -b base
-F fmt`) in the state dir, thrown away when the VM exits; a persistent disk is
the image itself, written in place.  `Overlays` makes the first overlay of a
base with qemu-img and writes the same bytes again for the next ones.  Paths
from the wire are resolved inside the image store only: no `..`, no absolute
path elsewhere, no symlink out.
"""

from __future__ import annotations

import os
import threading
import uuid
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


# A template is kept in chunks of this size, the all-zero ones left out (holes).
CHUNK = 4096
# Bases remembered at most (a few images serve most VMs; past this, start over).
MAX_TEMPLATES = 256


class Overlays:
    """Empty qcow2 overlays, as qemu-img makes them, without a qemu-img per VM.

    An empty overlay's bytes depend on what backs it (the base's absolute path,
    its format and virtual size) and on qemu-img, never on the overlay's own
    path: qemu-img writes no id, time or name of its own into it (checked in
    tests/nm/test_disks.py).  So the first overlay of a base version is made by
    qemu-img, into a template; the next ones are its bytes written again, holes
    kept: one file write (~0.1 ms) instead of a process (~10 ms, 20-30 ms on a
    busy host).  A base that changes (written, resized, replaced) is another
    version, so it gets a template of its own."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._templates: dict[tuple[object, ...], tuple[int, list[tuple[int, bytes]]]] = {}
        self._lock = threading.Lock()
        self._making = threading.Lock()  # one qemu-img at a time makes a template
        self.made = 0  # templates made by qemu-img (the rest were copies)

    def _key(self, base: Path, base_format: str) -> tuple[object, ...]:
        st = base.stat()
        return (str(base), base_format, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                st.st_ctime_ns)

    def _template(self, base: Path, base_format: str) -> tuple[int, list[tuple[int, bytes]]]:
        key = self._key(base, base_format)
        with self._lock:
            found = self._templates.get(key)
        if found is not None:
            return found
        with self._making:
            with self._lock:
                found = self._templates.get(key)
            if found is not None:
                return found
            scratch = self.workdir / f".template-{uuid.uuid4().hex}.qcow2"
            try:
                create_overlay(base, base_format, scratch)
                data = scratch.read_bytes()
            finally:
                remove_files([str(scratch)])
            chunks = [(at, data[at:at + CHUNK]) for at in range(0, len(data), CHUNK)
                      if any(data[at:at + CHUNK])]
            found = (len(data), chunks)
            with self._lock:
                if len(self._templates) >= MAX_TEMPLATES:
                    self._templates.clear()
                self._templates[key] = found
                self.made += 1
            return found

    def create(self, base: Path, base_format: str, overlay: Path) -> None:
        """An empty qcow2 overlay at `overlay` on `base` (read as `base_format`)."""
        size, chunks = self._template(base, base_format)
        overlay.parent.mkdir(parents=True, exist_ok=True)
        if overlay.exists():  # left by a start that died half-way; nothing runs on it
            overlay.unlink()
        try:
            fd = os.open(overlay, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise HypervisorError(f"cannot create overlay {overlay.name}: {exc}") from None
        try:
            for at, data in chunks:
                os.pwrite(fd, data, at)
            os.ftruncate(fd, size)
        except OSError as exc:
            os.close(fd)
            remove_files([str(overlay)])
            raise HypervisorError(f"cannot write overlay {overlay.name}: {exc}") from None
        os.close(fd)


def remove_files(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
