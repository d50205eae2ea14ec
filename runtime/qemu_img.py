"""qemu-img, asked about an image without trusting it.

An image's contents are the guest's to write, so what they look like proves
nothing: a raw disk whose guest wrote a qcow2 header naming `/etc/shadow` as
its backing file would, if probed again, chain that file in.  So the format
is detected once, when the image enters the store, and passed explicitly from
then on; and an image is taken only when

- its format is raw or qcow2 (others, vmdk's descriptors for one, can name
  any file on the host as their data),
- every backing file of its chain resolves inside the image store, and
- every layer names its backing file's format (so nothing in the chain is
  probed either).

Used by the CM when it records an image and by the NM before it opens one.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

QEMU_IMG = "qemu-img"
TIMEOUT = 60.0
FORMATS = ("raw", "qcow2")
MAX_CHAIN = 16


class QemuImgError(Exception):
    """qemu-img could not be run or could not read the file."""


class ImageRefused(Exception):
    """The file is readable but not an image this system will open."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    # The first backing file (resolved path inside the store) and its format.
    backing: str = ""
    backing_format: str = ""


def run(args: list[str]) -> str:
    try:
        proc = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise QemuImgError("qemu-img is not installed (package qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise QemuImgError(f"qemu-img {args[0]} took over {TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        raise QemuImgError(f"qemu-img {args[0]} failed: {proc.stderr.strip()[:400]}")
    return proc.stdout


def _layer(path: Path, fmt: str) -> dict[str, object]:
    args = ["info", "--output=json", "--force-share"]
    if fmt:
        args += ["-f", fmt]
    try:
        answer = json.loads(run([*args, str(path)]))
    except ValueError as exc:
        raise QemuImgError(f"qemu-img info {path.name}: unreadable answer: {exc}") from None
    if not isinstance(answer, dict):
        raise QemuImgError(f"qemu-img info {path.name}: unreadable answer")
    return answer


def inside(root: Path, path: str | Path) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([str(root), real]) == str(root) and real != str(root)


def inspect(path: Path, root: Path, fmt: str = "") -> ImageInfo:
    """What `path` (inside the store `root`, both resolved) is, read as `fmt`
    when given (never probed then), else as qemu-img detects it; refused
    (ImageRefused) unless it and its whole chain are safe to open."""
    name = os.path.relpath(path, root)
    top: ImageInfo | None = None
    current, current_fmt = path, fmt
    for _depth in range(MAX_CHAIN):
        layer = _layer(current, current_fmt)
        found = str(layer.get("format", ""))
        if found not in FORMATS:
            raise ImageRefused(f"image {name!r} is {found or 'of no known format'}; "
                               f"only {' and '.join(FORMATS)} images are taken")
        backing = str(layer.get("full-backing-filename") or layer.get("backing-filename") or "")
        backing_fmt = str(layer.get("backing-filename-format", ""))
        where = ""
        if backing:
            where = os.path.realpath(backing if os.path.isabs(backing)
                                     else current.parent / backing)
            if not inside(root, where):
                raise ImageRefused(f"image {name!r} is backed by a file outside the image "
                                   "store; refused")
            if not backing_fmt:
                raise ImageRefused(f"image {name!r} names a backing file without its format "
                                   "(qemu would probe it); rebase it with -F")
        if top is None:
            size = layer.get("virtual-size", 0)
            top = ImageInfo(found, int(size) if isinstance(size, int) else 0, where, backing_fmt)
        if not where:
            return top
        current, current_fmt = Path(where), backing_fmt
    raise ImageRefused(f"image {name!r} has a backing chain over {MAX_CHAIN} deep")
