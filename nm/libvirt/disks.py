"""The image store and the qcow2 overlays a VM runs on.

A non-persistent disk runs on an overlay (`qemu-img create -f qcow2 -b base
-F fmt`) in the state dir, thrown away when the VM exits; a persistent disk is
the image itself, written in place.  Paths from the wire are resolved inside the
image store only: no `..`, no absolute path elsewhere, no symlink out.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

from tashi.nm.errors import HypervisorError, InvalidArgument, NotFound

QEMU_IMG = "qemu-img"
QEMU_IMG_TIMEOUT = 60.0


class ImageStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._formats: dict[tuple[str, int, int], str] = {}
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

    def image_format(self, path: Path) -> str:
        """qcow2, raw ... as qemu-img sees it (cached per file version)."""
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._formats.get(key)
        if cached:
            return cached
        out = run_qemu_img(["info", "--output=json", str(path)])
        try:
            fmt = str(json.loads(out)["format"])
        except (ValueError, KeyError) as exc:
            raise HypervisorError(f"qemu-img info {path}: unreadable answer: {exc}") from None
        with self._lock:
            self._formats[key] = fmt
        return fmt


def run_qemu_img(args: list[str]) -> str:
    try:
        proc = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True,
                              timeout=QEMU_IMG_TIMEOUT, check=False)
    except FileNotFoundError:
        raise HypervisorError("qemu-img is not installed (package qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise HypervisorError(f"qemu-img {args[0]} took over {QEMU_IMG_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        raise HypervisorError(f"qemu-img {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def create_overlay(base: Path, base_format: str, overlay: Path) -> None:
    overlay.parent.mkdir(parents=True, exist_ok=True)
    if overlay.exists():  # left by a start that died half-way; nothing runs on it
        overlay.unlink()
    run_qemu_img(["create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format,
                  str(overlay)])


def remove_files(paths: list[str]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
