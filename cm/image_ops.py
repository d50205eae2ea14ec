"""Making and changing images in the store: copies and flattens in the
background, clones, rebases, deletes (uploads and downloads: image_transfer.py).

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
import functools
import logging
import os
import re
import secrets
import select
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tashi.cm import images
from tashi.cm import validation as v
from tashi.cm.cluster import Cluster, Txn, copy_of
from tashi.runtime import qemu_img
from tashi.runtime.errors import (
    ServiceError,
    exhausted,
    exists,
    invalid,
    not_found,
    precondition,
    unavailable,
)
from tashi.runtime.malloc import keep_large_buffers
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

# Bytes per read and write of a copy, and per streamed message (cm/image_transfer.py).
CHUNK = 1 << 20
# Most often a background job stores its progress.
PROGRESS_SECONDS = 0.5
PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
REASON_CHARS = 400
# qemu-img dies with the thread that runs it, so a killed CM leaves none writing.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


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


class Reporter:
    """A background job's progress into its record: at most every PROGRESS_SECONDS,
    the latest percentage (below 100: READY says done)."""

    def __init__(self, update: Callable[[int], None]) -> None:
        self.update = update
        self.latest = self.stored = 0
        self.at = 0.0

    def __call__(self, percent: float) -> None:
        self.latest = max(0, min(int(percent), 99))
        self.flush()

    def flush(self) -> None:
        now = time.monotonic()
        if self.latest == self.stored or now - self.at < PROGRESS_SECONDS:
            return
        self.at, self.stored = now, self.latest
        try:
            self.update(self.latest)
        except ServiceError:
            pass  # the store is unwritable for now: the next report tries again


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

    def _qemu(self, job: Job, args: list[str], progress: Reporter | None = None) -> None:
        """qemu-img `args` for `job`, killed when the job is cancelled; `progress`
        hears the percentage it prints with -p."""
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen([*DIE_WITH_PARENT, qemu_img.QEMU_IMG, *args],
                                        stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=err)
            except FileNotFoundError:
                raise qemu_img.QemuImgError("qemu-img is not installed (package qemu-utils)") \
                    from None
            job.proc = proc
            if job.cancelled.is_set():
                proc.kill()
            assert proc.stdout is not None
            out, tail = proc.stdout.fileno(), b""
            while True:
                if not select.select([out], [], [], PROGRESS_SECONDS)[0]:
                    if progress is not None:
                        progress.flush()
                    continue
                data = os.read(out, 4096)
                if not data:
                    break
                tail = (tail + data)[-128:]
                found = PROGRESS_RE.findall(tail)
                if found and progress is not None:
                    progress(float(found[-1]))
            proc.stdout.close()
            code = proc.wait()
            job.proc = None
            if job.cancelled.is_set():
                raise Cancelled
            if code != 0:
                err.seek(0)
                text = err.read().decode(errors="replace").strip()
                raise qemu_img.QemuImgError(f"qemu-img {args[0]} failed: {_clip(text)}")

    def _copy_raw(self, job: Job, src: str, dst: str, progress: Reporter) -> None:
        """A raw image copied chunk by chunk: holes and zeros stay holes, the rate
        is bounded (image_copy_rate), the progress is the bytes done."""
        rate = self.c.cfg.image_copy_rate
        zero = bytes(CHUNK)
        with open(src, "rb", buffering=0) as fin:
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                size = os.fstat(fin.fileno()).st_size
                os.ftruncate(fout, size)
                start, read, off = time.monotonic(), 0, 0
                while off < size:
                    if job.cancelled.is_set():
                        raise Cancelled
                    try:
                        data_at = os.lseek(fin.fileno(), off, os.SEEK_DATA)
                    except OSError:  # ENXIO: only a hole is left
                        break
                    if data_at > off:
                        off = data_at
                        continue
                    hole_at = os.lseek(fin.fileno(), off, os.SEEK_HOLE)
                    want = min(CHUNK, size - off, max(hole_at - off, 1))
                    data = os.pread(fin.fileno(), want, off)
                    if len(data) < want:
                        raise qemu_img.QemuImgError(f"the source shrank while being copied "
                                                    f"(at byte {off + len(data)} of {size})")
                    if data != zero[:len(data)]:
                        view = memoryview(data)
                        at = off
                        while view:
                            written = os.pwrite(fout, view, at)
                            view, at = view[written:], at + written
                    off += len(data)
                    read += len(data)
                    progress(100.0 * off / size)
                    if rate > 0:
                        ahead = read / rate - (time.monotonic() - start)
                        if ahead > 0:
                            job.cancelled.wait(ahead)
                if self.c.cfg.sync == "full":
                    os.fsync(fout)
            finally:
                os.close(fout)

    def _check_chain(self, name: str, fmt: str) -> None:
        """Before qemu-img reads an image whole: its chain still leads nowhere else."""
        qemu_img.inspect(Path(self._path(name)), Path(self.root), fmt)

    def _rate(self) -> list[str]:
        rate = self.c.cfg.image_copy_rate
        return ["-r", str(rate)] if rate > 0 else []

    def _progress(self, job: Job) -> Reporter:
        def store(percent: int) -> None:
            self._update(job.image_id, lambda img: setattr(img, "progress_percent", percent))

        return Reporter(store)

    def _start(self, job: Job, run: Callable[[], None]) -> None:
        def main() -> None:
            try:
                run()
            except Cancelled:
                log.info("image %d: deleted while being written; stopped", job.image_id)
            except Exception:
                log.exception("image %d: background write failed", job.image_id)
            finally:
                self.jobs.pop(job.image_id, None)

        threading.Thread(target=main, name=f"image-{job.image_id}", daemon=True).start()

    def _reserve_job(self, job: Job, started: list[Job]) -> None:
        """Count the job from now (its quota estimate), start it after the commit."""
        self.jobs[job.image_id] = job
        started.append(job)

    def _run_job(self, who: str, request_id: str, method: str, resp_cls: type,
                 body: Callable[[Txn, list[Job]], object]) -> object:
        started: list[Job] = []
        try:
            return self.c.mutate(who, request_id, method, resp_cls,  # type: ignore[arg-type]
                                 lambda txn: body(txn, started))
        except BaseException:
            for job in started:  # nothing was stored: nothing runs
                self.jobs.pop(job.image_id, None)
            raise

    # -- copy ------------------------------------------------------------------------
    def copy(self, who: str, req: cmpb.CopyImageRequest) -> cmpb.CopyImageResponse:
        """A full copy (a qcow2 chain flattened), written in the background."""
        work: list[tuple[Job, pb.Image, pb.Image]] = []

        def body(txn: Txn, started: list[Job]) -> cmpb.CopyImageResponse:
            self.c.user(who)
            self._need_store()
            src = self._source(txn, who, req.src)
            dst = self._new_name(req.dst)
            size = self._size(src.name)
            estimate = max(size, src.virtual_size_bytes) if src.backing else size
            self._check_quota(who, estimate)
            img = pb.Image(id=self.c.next_id(txn, "image"), name=dst, format=src.format,
                           virtual_size_bytes=src.virtual_size_bytes, owner=who,
                           state=pb.IMAGE_STATE_COPYING)
            img.create_time.GetCurrentTime()
            txn.put_quiet("image", img.id, img)
            job = Job(img.id, who, estimate)
            self._reserve_job(job, started)
            work.append((job, copy_of(src), img))
            return cmpb.CopyImageResponse(image=img)

        resp = self._run_job(who, req.request_id, "CopyImage", cmpb.CopyImageResponse, body)
        for job, src, img in work:
            self._start(job, functools.partial(self._copy_run, job, src, img))
        return resp  # type: ignore[return-value]

    def _copy_run(self, job: Job, src: pb.Image, img: pb.Image) -> None:
        final = self._path(img.name)
        tmp = self._temp(final, "copy")
        try:
            if src.format == "raw":
                self._copy_raw(job, self._path(src.name), tmp, self._progress(job))
            else:  # qemu-img reads the chain (its formats named in each layer), still inside
                self._check_chain(src.name, src.format)
                self._qemu(job, ["convert", "-p", *self._rate(), "-f", src.format, "-O",
                                 src.format, self._path(src.name), tmp], self._progress(job))
            info = qemu_img.inspect(Path(tmp), Path(self.root), src.format)
            with self.c.lock:
                if job.cancelled.is_set() or job.image_id not in self.c.image_records:
                    raise Cancelled
                _place(tmp, final)
                try:
                    self._finish(job, info)
                except BaseException:
                    _remove(final)
                    raise
        except Cancelled:
            raise
        except Exception as exc:
            why = f"copy of {src.name} failed: {exc}"
            if isinstance(exc, FileExistsError):
                why = f"copy of {src.name} failed: a file appeared under {img.name}"
            log.warning("image %s: %s", img.name, why)
            self._failed(job, why)
        finally:
            _remove(tmp)

    def _finish(self, job: Job, info: qemu_img.ImageInfo) -> None:
        def done(img: pb.Image) -> None:
            self._fill(img, info)
            img.state, img.reason, img.progress_percent = pb.IMAGE_STATE_READY, "", 0

        self._update(job.image_id, done)

    def _failed(self, job: Job, why: str, intact: bool = False) -> None:
        """The job failed: FAILED, or READY as it was when the image is intact."""
        def mark(img: pb.Image) -> None:
            img.state = pb.IMAGE_STATE_READY if intact else pb.IMAGE_STATE_FAILED
            img.reason, img.progress_percent = _clip(why), 0

        if not job.cancelled.is_set():
            self._update(job.image_id, mark)

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

    # -- rebase ----------------------------------------------------------------------
    def rebase(self, who: str, req: cmpb.RebaseImageRequest) -> cmpb.RebaseImageResponse:
        """With `backing`: safe `qemu-img rebase` onto it (the content stays the
        same), answered when done.  Without: flatten, in the background."""
        prior = self._replay(who, req.request_id, "RebaseImage", cmpb.RebaseImageResponse)
        if prior is not None:
            return prior  # type: ignore[return-value]
        plan: list[tuple[Job, pb.Image, pb.Image | None]] = []

        def begin(txn: Txn, started: list[Job]) -> cmpb.RebaseImageResponse:
            self.c.user(who)
            self._need_store()
            name, img = self._existing(txn, req.image)
            if img is None:
                img = images.record(self.c, txn, name)
                assert img is not None
            images.check_ready(img)
            images.check_owner(self.c, who, img, "rebase")
            if img.format != "qcow2":
                raise precondition(f"image {v.clip(name)} is {img.format}; only qcow2 images "
                                   "have a backing image")
            self._check_unused(name, "rebase")
            back: pb.Image | None = None
            if req.backing:
                back = self._source(txn, who, req.backing, "backing")
                self._check_no_cycle(name, back)
                estimate = self._size(name)
            elif not img.backing:
                return cmpb.RebaseImageResponse(image=img)  # nothing to flatten
            else:
                estimate = max(self._size(name), img.virtual_size_bytes)
                self._check_quota(img.owner or who, estimate, less=self._size(name))
            new = copy_of(img)
            new.state, new.progress_percent, new.reason = pb.IMAGE_STATE_COPYING, 0, ""
            txn.put_quiet("image", new.id, new)
            job = Job(new.id, img.owner, estimate)
            self._reserve_job(job, started)
            plan.append((job, new, back))
            return cmpb.RebaseImageResponse(image=new)

        flatten = not req.backing
        resp = self._run_job(who, req.request_id if flatten else "", "RebaseImage",
                             cmpb.RebaseImageResponse, begin)
        if not plan:
            return resp  # type: ignore[return-value]
        job, img, back = plan[0]
        if flatten:
            self._start(job, lambda: self._flatten_run(job, img))
            return resp  # type: ignore[return-value]
        assert back is not None
        try:
            self._rebase_run(job, img, back)
        finally:
            self.jobs.pop(job.image_id, None)

        def answer(txn: Txn) -> cmpb.RebaseImageResponse:
            cur = self.c.image_records.get(img.id)
            if cur is None:
                raise not_found(f"image {v.clip(img.name)} was deleted meanwhile")
            return cmpb.RebaseImageResponse(image=cur)

        return self.c.mutate(who, req.request_id, "RebaseImage", cmpb.RebaseImageResponse,
                             answer)

    def _check_no_cycle(self, name: str, back: pb.Image) -> None:
        seen, cur = set(), back
        while True:
            if cur.name == name:
                raise invalid(f"image {v.clip(back.name)} is {v.clip(name)} or is backed by "
                              "it; an image cannot back itself")
            seen.add(cur.name)
            oid = self.c.image_ids.get(cur.backing) if cur.backing else None
            if oid is None or cur.backing in seen:
                return
            cur = self.c.image_records[oid]

    def _rebase_run(self, job: Job, img: pb.Image, back: pb.Image) -> None:
        final = self._path(img.name)
        backing = os.path.relpath(self._path(back.name), os.path.dirname(final))
        try:
            self._check_chain(img.name, "qcow2")
            self._qemu(job, ["rebase", "-p", "-f", "qcow2", "-F", back.format, "-b", backing,
                             final], self._progress(job))
            info = qemu_img.inspect(Path(final), Path(self.root), "qcow2")
        except Cancelled:
            raise not_found(f"image {v.clip(img.name)} was deleted meanwhile") from None
        except Exception as exc:
            self._restore(job, img, f"rebase onto {back.name} failed: {exc}")
            if isinstance(exc, qemu_img.ImageRefused):
                raise invalid(str(exc)) from None
            raise unavailable(f"rebase onto {back.name} failed: {exc}") from None
        with self.c.lock:
            if job.cancelled.is_set():
                raise not_found(f"image {v.clip(img.name)} was deleted meanwhile")
            self._finish(job, info)

    def _restore(self, job: Job, img: pb.Image, why: str) -> None:
        """After a failed rebase or flatten: the image as the file now is (intact)."""
        try:
            info = qemu_img.inspect(Path(self._path(img.name)), Path(self.root), "qcow2")
        except Exception as exc:
            self._failed(job, f"{why}; the image cannot be read now: {exc}")
            return
        if not job.cancelled.is_set():
            def mark(new: pb.Image) -> None:
                self._fill(new, info)
                new.state, new.reason, new.progress_percent = (pb.IMAGE_STATE_READY,
                                                               _clip(why), 0)
            self._update(job.image_id, mark)

    def _flatten_run(self, job: Job, img: pb.Image) -> None:
        final = self._path(img.name)
        tmp = self._temp(final, "flatten")
        try:
            self._check_chain(img.name, "qcow2")
            self._qemu(job, ["convert", "-p", *self._rate(), "-f", "qcow2", "-O", "qcow2",
                             final, tmp], self._progress(job))
            info = qemu_img.inspect(Path(tmp), Path(self.root), "qcow2")
            with self.c.lock:
                if job.cancelled.is_set() or job.image_id not in self.c.image_records:
                    raise Cancelled
                os.chmod(tmp, os.stat(final).st_mode & 0o7777)
                os.replace(tmp, final)
                self._finish(job, info)
        except Cancelled:
            raise
        except Exception as exc:
            log.warning("image %s: flatten failed: %s", img.name, exc)
            self._restore(job, img, f"flatten failed: {exc}")
        finally:
            _remove(tmp)

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

