"""Making and changing images in the store: what every operation on images
checks, clones and deletes (copies, rebases and flattens, which run in the
background: image_jobs.py; uploads and downloads: image_transfer.py).

Who may do what: what a user makes is theirs (owner = caller); what they may
read whole (the source of a copy or clone, a new backing image, a download)
is a site image (no owner) or their own; what they may change or delete is
their own (site images: admins).  Admins may do anything.  An image that an
instance names or that backs another image is neither rebased nor deleted.

Nothing partial is ever visible under an image's name: every file is written
under a hidden temporary name (TEMP_PREFIX, skipped by listings and refused
as a name) in the folder of its final name, checked (size, sha256, format,
backing chain: `qemu_img.inspect`), and only then linked into place (never
over another file) and recorded, under the cluster's lock.  Any failure, or
a client that goes away, removes the temporary file; a restarted cluster
manager removes those a stopped one left behind.

A record being written in the background shows COPYING with its progress,
then READY, or FAILED with the reason (delete it).  A flatten or a rebase
that fails leaves the image as it was (READY, the reason saying what failed).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import secrets
import subprocess
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tashi.cm import images
from tashi.cm import validation as v
from tashi.cm.cluster import Cluster
from tashi.cm.txn import Txn, copy_of
from tashi.runtime import qemu_img
from tashi.runtime.errors import (
    ServiceError,
    exhausted,
    exists,
    invalid,
    precondition,
    unavailable,
)
from tashi.runtime.malloc import keep_large_buffers
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

# Bytes per read and write of a copy, and per streamed message (cm/image_transfer.py).
CHUNK = 1 << 20
REASON_CHARS = 400


class Cancelled(Exception):
    """The image a job was writing was deleted meanwhile."""


@dataclass
class Job:
    """One image being written in the background (copy, flatten, rebase)."""

    image_id: int
    owner: str
    # Bytes it may take when done: counted against the owner's quota while it runs.
    estimate: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[bytes] | None = None

    def cancel(self) -> None:
        self.cancelled.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()


def _clip(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "..."


def _remove(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _place(tmp: str, final: str) -> None:
    """`tmp` becomes `final`, never over a file there (a hard link where the file
    system has them; else a rename, the caller holding the cluster's lock)."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "exists", final) from None
        os.rename(tmp, final)


def _store_error(exc: OSError) -> ServiceError:
    """The image store refusing a write, as the caller can act on it."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return exhausted(f"the image store is full ({exc.strerror}); nothing was kept")
    return unavailable(f"the image store refused the write ({exc.strerror}); nothing was kept")


_LIVE: weakref.WeakSet[ImageOps] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """A stopping cluster manager leaves no qemu-img writing behind it."""
    for ops in list(_LIVE):
        ops.stop()


class ImageOps:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.jobs: dict[int, Job] = {}
        # Names being uploaded or cloned, and the bytes uploads will take, per user.
        self.pending: set[str] = set()
        self.pending_bytes: Counter[str] = Counter()
        _LIVE.add(self)
        keep_large_buffers()
        self.recover()

    # -- helpers -------------------------------------------------------------------
    @property
    def root(self) -> str:
        assert self.c.images is not None
        return os.path.realpath(self.c.images)

    def _need_store(self) -> None:
        if self.c.images is None:
            raise precondition("this cluster manager has no image store (--images)")

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def _temp(self, final: str, kind: str) -> str:
        """A hidden name beside `final` (same folder, so same file system)."""
        return os.path.join(os.path.dirname(final),
                            f"{images.TEMP_PREFIX}{kind}-{secrets.token_hex(6)}")

    def _size(self, name: str) -> int:
        try:
            return os.path.getsize(self._path(name))
        except OSError:
            return 0

    def _replay(self, who: str, request_id: str, method: str, resp_cls: type) -> object:
        """The stored answer to a request already served, else None (checked
        before work done outside a transaction, so a retry repeats nothing)."""
        if request_id and f"{who}/{request_id}" in self.c.request_ids:
            def never(txn: Txn) -> object:
                raise unavailable("the answer to this request_id was lost; retry with a new one")
            return self.c.mutate(who, request_id, method, resp_cls, never)  # type: ignore[arg-type]
        return None

    def _new_name(self, name: str) -> str:
        canon = images.new_name(self.c, name)
        if canon in self.pending:
            raise exists(f"image {v.clip(canon)} is being uploaded or cloned; choose another "
                         "name")
        return canon

    def _source(self, txn: Txn, who: str, name: str, what: str = "source") -> pb.Image:
        """A ready image `who` may read whole, recorded now if it was not yet."""
        if not name:
            raise invalid(f"name the {what} image (a path inside the image store)")
        img = images.record(self.c, txn, images.canonical(self.c, name))
        assert img is not None
        images.check_ready(img)
        images.check_source(self.c, who, img)
        self._check_not_written(img.name, f"use it as a {what}")
        return img

    def _check_not_written(self, name: str, what: str) -> None:
        """Read whole only while no instance writes it in place (a copy, a clone
        or a download would catch it half-written, an overlay be corrupted)."""
        writers = sorted(i.name for i in self.c.instances.values()
                         if any(d.uri == name and d.persistent for d in i.spec.disks))
        if writers:
            raise precondition(f"image {v.clip(name)} is a persistent disk of instance "
                               f"{writers[0]!r}; {what} once no instance writes it")

    def _existing(self, txn: Txn, name: str) -> tuple[str, pb.Image | None]:
        """An image to change or delete: its canonical name and record (None: a file
        never recorded); also a record whose file is not (or no longer) there."""
        if not name:
            raise invalid("name the image (a path inside the image store)")
        try:
            canon = images.canonical(self.c, name)
        except ServiceError as exc:
            norm = os.path.normpath(name)
            oid = self.c.image_ids.get(norm)
            if exc.code != grpc.StatusCode.NOT_FOUND or oid is None:
                raise
            return norm, self.c.image_records[oid]
        oid = self.c.image_ids.get(canon)
        return canon, (self.c.image_records[oid] if oid is not None else None)

    def _check_unused(self, name: str, what: str) -> None:
        users = sorted(i.name for i in self.c.instances.values()
                       if any(d.uri == name for d in i.spec.disks))
        if users:
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            raise precondition(f"cannot {what} image {v.clip(name)}: instance {users[0]!r}"
                               f"{more} uses it")
        backed = sorted(i.name for i in self.c.image_records.values() if i.backing == name)
        if backed:
            raise precondition(f"cannot {what} image {v.clip(name)}: it backs image "
                               f"{v.clip(backed[0])}")

    def usage(self, who: str) -> int:
        """Bytes `who`'s images take in the store, with what their jobs and uploads
        under way may add."""
        used = self.pending_bytes[who]
        for img in self.c.image_records.values():
            if img.owner == who:
                job = self.jobs.get(img.id)
                used += job.estimate if job is not None else self._size(img.name)
        return used

    def _check_quota(self, who: str, more: int, less: int = 0) -> None:
        quota = self.c.cfg.quota_image_bytes
        if quota <= 0 or self.c.is_admin(who):
            return
        used = self.usage(who) - less
        if used + more > quota:
            raise exhausted(f"{who}'s images take {used} bytes of their {quota}-byte quota; "
                            f"{more} more would exceed it (delete images first)")

    def _update(self, image_id: int, edit: Callable[[pb.Image], None]) -> pb.Image | None:
        """Edit an image's record (as the CM itself); None when it is gone."""
        done: list[pb.Image] = []

        def body(txn: Txn) -> None:
            cur = self.c.image_records.get(image_id)
            if cur is None:
                return
            new = copy_of(cur)
            edit(new)
            txn.put_quiet("image", image_id, new)
            done.append(new)

        self.c.write("tashi-cm", body)
        return done[0] if done else None

    def _fill(self, img: pb.Image, info: qemu_img.ImageInfo) -> None:
        img.format = info.format
        img.virtual_size_bytes = info.virtual_size
        img.backing = os.path.relpath(info.backing, self.root) if info.backing else ""
        img.size_bytes = self._size(img.name)

    def _inspect(self, path: str, fmt: str = "") -> qemu_img.ImageInfo:
        try:
            return qemu_img.inspect(Path(path), Path(self.root), fmt)
        except qemu_img.ImageRefused as exc:
            raise invalid(str(exc).replace(os.path.basename(path), "the new image")) from None
        except qemu_img.QemuImgError as exc:
            raise unavailable(f"cannot read the new image: {exc}") from None

    def _check_backing(self, txn: Txn, who: str, info: qemu_img.ImageInfo) -> None:
        """A new image's backing image: ready, one `who` may read, and named with
        the format the catalogue recorded (so no raw image a guest wrote a
        header into is ever read as qcow2)."""
        if not info.backing:
            return
        name = os.path.relpath(info.backing, self.root)
        back = self._source(txn, who, name, "backing")
        if info.backing_format != back.format:
            raise invalid(f"the new image names its backing image {v.clip(name)} as "
                          f"{info.backing_format}, but that image is {back.format}")

    # -- clone -----------------------------------------------------------------------
    def clone(self, who: str, req: cmpb.CloneImageRequest) -> cmpb.CloneImageResponse:
        """`dst`: a qcow2 overlay backed by `src`, with src's recorded format."""
        prior = self._replay(who, req.request_id, "CloneImage", cmpb.CloneImageResponse)
        if prior is not None:
            return prior  # type: ignore[return-value]
        chosen: list[tuple[pb.Image, str]] = []

        def check(txn: Txn) -> cmpb.CloneImageResponse:
            self.c.user(who)
            self._need_store()
            src = self._source(txn, who, req.src)
            dst = self._new_name(req.dst)
            self._check_quota(who, 0)
            self.pending.add(dst)
            chosen.append((copy_of(src), dst))
            return cmpb.CloneImageResponse()

        try:
            self.c.mutate(who, "", "CloneImage", cmpb.CloneImageResponse, check)
        except BaseException:
            for _src, dst in chosen:
                self.pending.discard(dst)
            raise
        src, dst = chosen[0]
        final = self._path(dst)
        tmp = self._temp(final, "clone")
        try:
            backing = os.path.relpath(self._path(src.name), os.path.dirname(final))
            try:
                qemu_img.run(["create", "-q", "-f", "qcow2", "-b", backing, "-F", src.format,
                              tmp])
            except qemu_img.QemuImgError as exc:
                raise unavailable(f"cannot make the clone: {exc}") from None
            info = self._inspect(tmp, "qcow2")
            return self._install(who, req.request_id, "CloneImage",  # type: ignore[return-value]
                                 cmpb.CloneImageResponse, tmp, dst, info)
        finally:
            self.pending.discard(dst)
            _remove(tmp)

    def _install(self, who: str, request_id: str, method: str, resp_cls: type, tmp: str,
                 name: str, info: qemu_img.ImageInfo, reserved: int = 0) -> object:
        """Link a checked temporary file into place as `name` (never over another
        file), owned by `who`, in the transaction that records it; a refused
        commit takes the link back."""
        final = self._path(name)
        linked: list[str] = []

        def body(txn: Txn) -> object:
            images.new_name(self.c, name)  # the name is still free (it is ours in `pending`)
            self._check_backing(txn, who, info)
            self._check_quota(who, os.path.getsize(tmp), less=reserved)
            img = pb.Image(id=self.c.next_id(txn, "image"), name=name, owner=who,
                           state=pb.IMAGE_STATE_READY)
            img.create_time.GetCurrentTime()
            try:
                _place(tmp, final)
            except FileExistsError:
                raise exists(f"image {v.clip(name)} appeared meanwhile; nothing was "
                             "kept") from None
            except OSError as exc:
                raise _store_error(exc) from None
            linked.append(final)
            self._fill(img, info)
            txn.put_quiet("image", img.id, img)
            return resp_cls(image=img)

        try:
            return self.c.mutate(who, request_id, method, resp_cls, body)  # type: ignore[arg-type]
        except BaseException:
            for path in linked:
                _remove(path)
            raise

    # -- delete ----------------------------------------------------------------------
    def delete(self, who: str, req: cmpb.DeleteImageRequest) -> cmpb.DeleteImageResponse:
        """The file and its record; a job writing it is stopped."""
        moved: list[tuple[str, str]] = []
        stopped: list[Job] = []

        def body(txn: Txn) -> cmpb.DeleteImageResponse:
            self.c.user(who)
            self._need_store()
            name, img = self._existing(txn, req.name)
            if img is None:
                self.c.require_admin(who, f"delete {v.clip(name)}, a file never recorded "
                                     "(a site image)")
                img = pb.Image(name=name)
            else:
                images.check_owner(self.c, who, img, "delete")
            self._check_unused(name, "delete")
            if img.id:
                txn.delete_quiet("image", img.id)
                job = self.jobs.get(img.id)
                if job is not None:
                    stopped.append(job)
            path = self._path(name)
            if os.path.lexists(path):
                trash = self._temp(path, "deleted")
                os.rename(path, trash)  # last: a refused commit puts it back
                moved.append((trash, path))
            return cmpb.DeleteImageResponse(image=img)

        try:
            resp = self.c.mutate(who, req.request_id, "DeleteImage", cmpb.DeleteImageResponse,
                                 body)
        except BaseException:
            for trash, path in moved:
                if not os.path.lexists(path):
                    os.rename(trash, path)
            raise
        for job in stopped:
            job.cancel()
        for trash, _path in moved:
            _remove(trash)
        return resp

    # -- start and stop --------------------------------------------------------------
    def recover(self) -> None:
        """After a (re)start: temporary files a stopped CM left are removed; an
        image it was writing is READY if its file is complete and readable
        (a flatten or rebase cut short leaves it intact), else FAILED."""
        c = self.c
        if c.images is None or not c.images.is_dir():
            return
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for fname in files:
                if fname.startswith(images.TEMP_PREFIX):
                    log.info("removing %s, left by a stopped cluster manager", fname)
                    _remove(os.path.join(folder, fname))
        for img in [i for i in c.image_records.values() if i.state == pb.IMAGE_STATE_COPYING]:
            why = "the cluster manager stopped while writing it"
            try:
                info = qemu_img.inspect(Path(self._path(img.name)), Path(self.root), img.format)
            except Exception as exc:
                def failed(new: pb.Image, why: str = f"{why}: {exc}") -> None:
                    new.state, new.reason, new.progress_percent = (pb.IMAGE_STATE_FAILED,
                                                                   _clip(why), 0)
                self._update(img.id, failed)
                continue

            def intact(new: pb.Image, info: qemu_img.ImageInfo = info, why: str = why) -> None:
                self._fill(new, info)
                new.state, new.reason, new.progress_percent = pb.IMAGE_STATE_READY, why, 0
            self._update(img.id, intact)

    def stop(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel()

