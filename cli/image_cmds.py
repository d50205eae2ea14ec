"""Images in the store: copy, clone, rebase, delete, upload and download them.

What one makes is one's own; the source of a copy or clone, a new backing
image and a download are site images or one's own (admins: any).  Uploads
and downloads show a progress bar on stderr when it is a terminal."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

import grpc

from tashi.cli.admin_cmds import IMAGE_COLUMNS, image_rows
from tashi.cli.context import Context, UsageError
from tashi.runtime.client import ClusterClient, TashiError
from tashi.v1 import resources_pb2 as pb

MIB = 1 << 20
# A rebase onto a new backing image answers when done: it may take long.
REBASE_SECONDS = 24 * 3600.0
POLL_SECONDS = 0.5


class ProgressBar:
    """`label: done / total MiB  pct  rate` on one line of `stream`, redrawn at
    most ten times a second; silent unless the stream is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.start = time.monotonic()
        self.shown = 0.0
        self.drawn = False

    def _draw(self, text: str, final: bool) -> None:
        now = time.monotonic()
        if not self.on or (now - self.shown < 0.1 and not final):
            return
        self.shown = now
        self.stream.write(f"\r{self.label}: {text}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def __call__(self, done: int, total: int) -> None:
        rate = done / max(time.monotonic() - self.start, 1e-6) / MIB
        pct = f"  {100 * done // total:3d}%" if total > 0 else ""
        self._draw(f"{done / MIB:.1f} / {total / MIB:.1f} MiB{pct}  {rate:.1f} MiB/s",
                   done >= total)

    def percent(self, percent: int) -> None:
        elapsed = time.monotonic() - self.start
        self._draw(f"{percent:3d}%  {elapsed:.0f}s", False)

    def done(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _show(ctx: Context, img: pb.Image) -> None:
    ctx.output(image_rows(ctx, [img]), IMAGE_COLUMNS)


def follow(client: ClusterClient, name: str, label: str, wait: float) -> pb.Image:
    """Poll image `name` until it is no longer being written (or `wait` seconds
    went by), its progress on a bar; the image as it is then."""
    bar = ProgressBar(label)
    deadline = time.monotonic() + wait
    try:
        while True:
            img = next((i for i in client.list_images() if i.name == name), None)
            if img is None:
                raise TashiError(grpc.StatusCode.NOT_FOUND,
                                 f"image {name!r} is gone (deleted meanwhile?)")
            if img.state != pb.IMAGE_STATE_COPYING or time.monotonic() > deadline:
                return img
            bar.percent(img.progress_percent)
            time.sleep(POLL_SECONDS)
    finally:
        bar.done()


def _written(ctx: Context, img: pb.Image, label: str) -> int:
    """Show the image (followed first with --wait); 1 if it failed."""
    if ctx.args.wait and img.state == pb.IMAGE_STATE_COPYING:
        img = follow(ctx.client(), img.name, label, ctx.args.wait_seconds)
    _show(ctx, img)
    if img.state == pb.IMAGE_STATE_FAILED or (img.reason and ctx.args.wait):
        ctx.err(f"{img.name}: {img.reason}")
    return 1 if img.state == pb.IMAGE_STATE_FAILED else 0


def copy_image(ctx: Context) -> int:
    a = ctx.args
    img = ctx.client().copy_image(a.src, a.dst)
    return _written(ctx, img, f"copying {a.src} to {img.name}")


def clone_image(ctx: Context) -> int:
    _show(ctx, ctx.client().clone_image(ctx.args.src, ctx.args.dst))
    return 0


def rebase_image(ctx: Context) -> int:
    a = ctx.args
    img = ctx.client().rebase_image(a.image, a.backing or "", timeout=REBASE_SECONDS)
    return _written(ctx, img, f"flattening {img.name}")


def delete_image(ctx: Context) -> int:
    _show(ctx, ctx.client().delete_image(ctx.args.image))
    return 0


def upload_image(ctx: Context) -> int:
    path = Path(ctx.args.file)
    if not path.is_file():
        raise UsageError(f"{ctx.args.file}: no such file")
    bar = ProgressBar(f"uploading {path.name}")
    try:
        img = ctx.client().upload_image(path, ctx.args.name or "", progress=bar)
    finally:
        bar.done()
    _show(ctx, img)
    return 0


def download_image(ctx: Context) -> int:
    name = ctx.args.name
    path = Path(ctx.args.file)
    if path.is_dir():
        path = path / Path(name).name
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such folder")
    bar = ProgressBar(f"downloading {name}")
    try:
        size, digest = ctx.client().download_image(name, path, progress=bar)
    finally:
        bar.done()
    ctx.output([{"name": name, "file": str(path), "size_bytes": size, "digest": digest}],
               ["name", "file", "size_bytes", "digest"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("copyImage", help="a full copy of an image, yours, made in the "
                       "background (getImages shows its progress)")
    p.add_argument("--src", required=True, help="a site image or one of yours")
    p.add_argument("--dst", required=True, help="new path inside the image store")
    p.add_argument("--wait", action="store_true", help="follow the copy until it is done")
    p.add_argument("--wait-seconds", type=float, default=24 * 3600.0, help=argparse.SUPPRESS)
    p.set_defaults(func=copy_image)

    p = sub.add_parser("cloneImage", help="a new qcow2 image, yours, backed by another")
    p.add_argument("--src", required=True, help="the backing image: a site image or yours")
    p.add_argument("--dst", required=True, help="new path inside the image store")
    p.set_defaults(func=clone_image)

    p = sub.add_parser("rebaseImage", help="put a qcow2 image onto another backing image "
                       "with the same content, or with no --backing flatten it (background)")
    p.add_argument("--image", required=True)
    p.add_argument("--backing", help="the new backing image (same content as the old)")
    p.add_argument("--wait", action="store_true", help="follow a flatten until it is done")
    p.add_argument("--wait-seconds", type=float, default=24 * 3600.0, help=argparse.SUPPRESS)
    p.set_defaults(func=rebase_image)

    p = sub.add_parser("deleteImage", help="delete an image (yours; site images: admins) "
                       "that no instance uses and no image is backed by")
    p.add_argument("--image", required=True)
    p.set_defaults(func=delete_image)

    p = sub.add_parser("uploadImage", help="send a local raw or qcow2 file into the image "
                       "store as an image of yours")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", help="path inside the image store (default: the file's name)")
    p.set_defaults(func=upload_image)

    p = sub.add_parser("downloadImage", help="fetch an image (a site image or yours) into a "
                       "local file, its checksum checked")
    p.add_argument("name", metavar="NAME", help="path inside the image store")
    p.add_argument("file", metavar="FILE", help="local file (or folder) to write")
    p.set_defaults(func=download_image)
