"""Image operations that run in the background, as `qemu-img` or a sparse copy
under way beside the calls: copies, rebases and flattens (the checks they share
with every image operation: image_ops.py).

A record being written shows COPYING with its progress, then READY, or FAILED
with the reason; a flatten or a rebase that fails leaves the image as it was
(READY, the reason saying what failed).  A job dies with its cluster manager
(qemu-img with the thread that runs it) and a restarted one settles what it
left (ImageOps.recover).
"""

from __future__ import annotations

import functools
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tashi.cm import images
from tashi.cm import validation as v
from tashi.cm.image_ops import CHUNK, Cancelled, ImageOps, Job, _clip, _place, _remove, log
from tashi.cm.txn import Txn, copy_of
from tashi.runtime import qemu_img
from tashi.runtime.errors import ServiceError, invalid, not_found, precondition, unavailable
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

# Most often a background job stores its progress.
PROGRESS_SECONDS = 0.5
PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
# qemu-img dies with the thread that runs it, so a killed CM leaves none writing.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


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


class ImageJobs(ImageOps):
    """ImageOps with the operations that run in the background."""

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
