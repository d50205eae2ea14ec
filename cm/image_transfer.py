"""Uploads and downloads of whole images, over either way in: the gRPC streams
(UploadImage, DownloadImage: stock clients, sha256) or the data port
(cm/data_port.py: a ticket from OpenImageTransfer, then raw bytes and a BLAKE3
digest).  Both share one path through the checks: what may be uploaded or
downloaded, by whom, within which quota and how many at a time, and how an
upload becomes visible (cm/image_ops.py `_install`: checked, then linked into
place; nothing partial under its name, ever).

Tickets are single use, bound to the caller, the direction, the name and (for
uploads) the size, and expire after TICKET_SECONDS; every check is made again
when the data port uses one, so a ticket reserves nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from tashi.cm import images
from tashi.cm import validation as v
from tashi.cm.image_ops import CHUNK, ImageOps, _remove, _store_error
from tashi.cm.slots import Slots
from tashi.runtime.errors import ServiceError, exhausted, invalid, precondition, unavailable
from tashi.v1 import cluster_manager_pb2 as cmpb

# Uploads and downloads at a time, in all and per caller: each holds a thread.
TRANSFERS = 16
TRANSFERS_PER_CALLER = 4
UPLOADS, DOWNLOADS = "uploads", "downloads"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_UPLOAD = 1 << 50  # 1 PiB: a size past any disk, refused before anything is written
TICKET_SECONDS = 30
TICKETS_PER_CALLER = 8  # unused tickets a caller may hold


@dataclass(frozen=True)
class Ticket:
    who: str
    kind: int  # cmpb.IMAGE_TRANSFER_KIND_*
    name: str
    size: int
    expires: float  # time.monotonic()


class Incoming:
    """One upload under way: its name and bytes reserved, a hidden file beside
    the final name.  `write` the bytes, check their digest, then `finish`;
    `close` (always) removes whatever was not installed."""

    def __init__(self, ops: ImageOps, slots: Slots, who: str, name: str, size: int) -> None:
        c = ops.c
        if not 0 < size <= MAX_UPLOAD:
            raise invalid(f"size_bytes must be between 1 and {MAX_UPLOAD}, got {size}")
        with c.lock:
            c.user(who)
            ops._need_store()
            name = ops._new_name(name)
            ops._check_quota(who, size)
            slots.take(who, UPLOADS)
            ops.pending.add(name)
            ops.pending_bytes[who] += size
        self.ops, self.slots, self.who, self.name, self.size = ops, slots, who, name, size
        self.got = 0
        self.tmp = ops._temp(ops._path(name), "upload")
        try:
            self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                              0o600)
        except OSError as exc:
            self.fd = -1
            self.close()
            raise _store_error(exc) from None

    def write(self, data: bytes | memoryview) -> None:
        self.got += len(data)
        if self.got > self.size:
            raise invalid(f"the upload sent more than the {self.size} bytes announced; "
                          "nothing was kept")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise _store_error(exc) from None

    def check_complete(self) -> None:
        if self.got != self.size:
            raise invalid(f"the upload sent {self.got} of the {self.size} bytes announced; "
                          "nothing was kept")

    def finish(self) -> cmpb.UploadImageResponse:
        """Durable (with --sync full), inspected, installed: the caller's image."""
        self.check_complete()
        try:
            if self.ops.c.cfg.sync == "full":
                os.fsync(self.fd)
            os.fchmod(self.fd, 0o644)
            os.close(self.fd)
            self.fd = -1
        except OSError as exc:
            raise _store_error(exc) from None
        info = self.ops._inspect(self.tmp)
        return self.ops._install(self.who, "", "UploadImage",  # type: ignore[return-value]
                                 cmpb.UploadImageResponse, self.tmp, self.name, info,
                                 reserved=self.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        _remove(self.tmp)
        ops = self.ops
        with ops.c.lock:
            ops.pending.discard(self.name)
            ops.pending_bytes[self.who] -= self.size
            if ops.pending_bytes[self.who] <= 0:
                del ops.pending_bytes[self.who]
        self.slots.give(self.who, UPLOADS)

    def __enter__(self) -> Incoming:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transfers:
    def __init__(self, ops: ImageOps) -> None:
        self.ops = ops
        self.c = ops.c
        self.slots = Slots(TRANSFERS, TRANSFERS_PER_CALLER, "uploads and downloads")
        self._tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()
        self.port = 0  # the data port's, once it serves (0: none)

    # -- shared checks -----------------------------------------------------------------
    def incoming(self, who: str, name: str, size: int) -> Incoming:
        return Incoming(self.ops, self.slots, who, name, size)

    def readable(self, who: str, name: str) -> str:
        """The canonical name of an image `who` may download whole now."""
        c = self.c
        with c.lock:
            c.user(who)
            self.ops._need_store()
            if not name:
                raise invalid("name the image to download")
            canon = images.canonical(c, name)
            oid = c.image_ids.get(canon)
            if oid is not None:  # a file never recorded is a site image
                img = c.image_records[oid]
                images.check_ready(img)
                images.check_source(c, who, img)
            self.ops._check_not_written(canon, "download it")
        return canon

    def outgoing(self, who: str, name: str) -> tuple[io.FileIO, Callable[[], None]]:
        """The open file of an image `who` may download, and what to call when done."""
        canon = self.readable(who, name)
        self.slots.take(who, DOWNLOADS)
        try:
            f = io.FileIO(self.ops._path(canon), "rb")
        except OSError as exc:
            self.slots.give(who, DOWNLOADS)
            raise unavailable(f"cannot read image {v.clip(canon)}: {exc.strerror}") from None

        def done() -> None:
            f.close()
            self.slots.give(who, DOWNLOADS)
        return f, done

    # -- the gRPC streams ----------------------------------------------------------------
    def upload(self, who: str, requests: Iterator[cmpb.UploadImageRequest]
               ) -> cmpb.UploadImageResponse:
        """Header, then chunks into a hidden file; checked, then linked into place."""
        try:
            first = next(requests, None)
        except grpc.RpcError:
            raise ServiceError(grpc.StatusCode.CANCELLED, "the upload was abandoned") from None
        if first is None or first.WhichOneof("part") != "header":
            raise invalid("an upload starts with its header (name, size_bytes, sha256)")
        head = first.header
        sha = head.sha256.lower()
        if not SHA256_RE.match(sha):
            raise invalid("the header's sha256 must be 64 hex digits")
        with self.incoming(who, head.name, head.size_bytes) as inc:
            hasher = hashlib.sha256()
            try:
                for req in requests:
                    if req.WhichOneof("part") != "chunk":
                        raise invalid("after the header an upload sends chunks only")
                    data = req.chunk
                    inc.write(data)
                    hasher.update(data)
            except grpc.RpcError:
                raise ServiceError(grpc.StatusCode.CANCELLED,
                                   "the upload was abandoned; nothing was kept") from None
            inc.check_complete()
            if hasher.hexdigest() != sha:
                raise invalid("the upload's sha256 is not the header's: the file was damaged "
                              "on the way; nothing was kept")
            return inc.finish()

    def download(self, who: str, req: cmpb.DownloadImageRequest
                 ) -> Iterator[cmpb.DownloadImageResponse]:
        """size_bytes, the bytes in chunks, then the sha256 of what was sent."""
        f, done = self.outgoing(who, req.name)
        try:
            size = os.fstat(f.fileno()).st_size
            yield cmpb.DownloadImageResponse(size_bytes=size)
            hasher, left = hashlib.sha256(), size
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise unavailable(f"image {v.clip(req.name)} shrank while being sent")
                left -= len(data)
                hasher.update(data)
                yield cmpb.DownloadImageResponse(chunk=data)
            yield cmpb.DownloadImageResponse(sha256=hasher.hexdigest())
        finally:
            done()

    # -- tickets for the data port ----------------------------------------------------------
    def open(self, who: str, req: cmpb.OpenImageTransferRequest
             ) -> cmpb.OpenImageTransferResponse:
        """Checks what it can now (so a refusal comes before any bytes) and hands a
        ticket for the data port."""
        if not self.port:
            raise precondition("this cluster manager serves no data port (--data-listen "
                               "off); use UploadImage or DownloadImage")
        c = self.c
        if req.kind == cmpb.IMAGE_TRANSFER_KIND_UPLOAD:
            if not 0 < req.size_bytes <= MAX_UPLOAD:
                raise invalid(f"size_bytes must be between 1 and {MAX_UPLOAD}, "
                              f"got {req.size_bytes}")
            with c.lock:
                c.user(who)
                self.ops._need_store()
                name = self.ops._new_name(req.name)
                self.ops._check_quota(who, req.size_bytes)
        elif req.kind == cmpb.IMAGE_TRANSFER_KIND_DOWNLOAD:
            name = self.readable(who, req.name)
        else:
            raise invalid("kind must be IMAGE_TRANSFER_KIND_UPLOAD or "
                          "IMAGE_TRANSFER_KIND_DOWNLOAD")
        now = time.monotonic()
        ticket = secrets.token_hex(32)
        with self._lock:
            for old in [t for t, held in self._tickets.items() if held.expires <= now]:
                del self._tickets[old]
            if sum(t.who == who for t in self._tickets.values()) >= TICKETS_PER_CALLER:
                raise exhausted(f"{who} holds {TICKETS_PER_CALLER} unused transfer tickets; "
                                f"use them or wait {TICKET_SECONDS} s for them to expire")
            self._tickets[ticket] = Ticket(who, req.kind, name, req.size_bytes,
                                           now + TICKET_SECONDS)
        return cmpb.OpenImageTransferResponse(port=self.port, ticket=ticket,
                                              expires_in_seconds=TICKET_SECONDS)

    def redeem(self, ticket: str) -> Ticket:
        """The ticket's promise, once: unknown, used or expired tickets are refused alike."""
        with self._lock:
            held = self._tickets.pop(ticket, None)
        if held is None or held.expires <= time.monotonic():
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED,
                               "the transfer ticket is unknown, used or expired")
        return held
