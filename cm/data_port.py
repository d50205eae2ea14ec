"""The image data port: where uploads and downloads with a ticket from
OpenImageTransfer move their bytes (wire format: runtime/data_port.py).

Hostile peers are bounded: a connection has HELLO_SECONDS to finish its TLS
handshake and present a ticket, and at most HELLOS connections may be at that
stage at once (more are closed at once); after that, a transfer takes one of
the cluster manager's upload and download slots (cm/image_transfer.py) and
must move bytes at least every IDLE_SECONDS.  A ticket works once, for the
caller, direction, name and size it was issued for; every check on the image
is made again when it is redeemed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time

import grpc

from tashi.cm.image_ops import _store_error
from tashi.cm.image_transfer import Ticket, Transfers
from tashi.runtime import bulk, server
from tashi.runtime import data_port as wire
from tashi.runtime.errors import ServiceError, invalid, unavailable
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

HELLO_SECONDS = 10.0
HELLOS = 64
DRAIN_SECONDS = 2.0  # reading what a refused upload still sends, so it hears why


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS with the CM's own certificate; callers show none (the ticket is theirs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class DataPort:
    def __init__(self, transfers: Transfers, listen: str,
                 tls: ssl.SSLContext | None = None) -> None:
        self.transfers = transfers
        self.tls = tls
        host, port = server.split_address(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, int(port)))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self._hellos = threading.BoundedSemaphore(HELLOS)
        self._stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="data-port", daemon=True)

    def start(self) -> int:
        self._thread.start()
        self.transfers.port = self.port
        return self.port

    def stop(self) -> None:
        self.transfers.port = 0
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self._lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _peer = self.sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # out of descriptors for now: do not spin
                continue
            if not self._hellos.acquire(blocking=False):
                conn.close()  # too many connections without a ticket yet
                continue
            threading.Thread(target=self._serve, args=(conn,), name="data-transfer",
                             daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        hello = True
        with self._lock:
            self._open.add(raw)
        try:
            raw.settimeout(HELLO_SECONDS)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
            text = wire.read_exact(conn, wire.TICKET_CHARS)
            ticket = self.transfers.redeem(text.decode("ascii", "replace"))
            self._hellos.release()
            hello = False
            conn.settimeout(wire.IDLE_SECONDS)
            if ticket.kind == cmpb.IMAGE_TRANSFER_KIND_UPLOAD:
                self._upload(conn, ticket)
            else:
                self._download(conn, ticket)
        except ServiceError as exc:
            self._refuse(conn, exc)
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("a data port connection ended early: %s", exc)
        except Exception:
            log.exception("a data port transfer failed unexpectedly")
            self._refuse(conn, unavailable("the transfer failed in the cluster manager"))
        finally:
            if hello:
                self._hellos.release()
            with self._lock:
                self._open.discard(raw)
            with contextlib.suppress(OSError):
                conn.close()

    def _refuse(self, conn: socket.socket, exc: ServiceError) -> None:
        """Say why, then read (and drop) what the peer still sends for a moment, so
        its writes do not fail before it reads the answer."""
        try:
            conn.settimeout(DRAIN_SECONDS)
            conn.sendall(wire.frame(cmpb.ImageTransferResult(code=exc.code.value[0],
                                                             message=exc.message)))
            deadline = time.monotonic() + DRAIN_SECONDS
            sink = bytearray(bulk.BLOCK)
            while time.monotonic() < deadline and conn.recv_into(sink):
                pass
        except (OSError, ssl.SSLError):
            pass

    def _upload(self, conn: socket.socket, ticket: Ticket) -> None:
        with self.transfers.incoming(ticket.who, ticket.name, ticket.size) as inc:
            conn.sendall(wire.frame(cmpb.ImageTransferResult()))  # go ahead
            try:
                mine = bulk.receive_file(conn, inc.fd, ticket.size, wire.IDLE_SECONDS)
            except (ConnectionError, TimeoutError, ssl.SSLError):
                raise ServiceError(grpc.StatusCode.CANCELLED,
                                   "the upload was cut short; nothing was kept") from None
            except OSError as exc:  # the store refused the write (full, read-only)
                raise _store_error(exc) from None
            inc.got = ticket.size
            try:
                digest = wire.read_exact(conn, wire.DIGEST_BYTES)
            except ConnectionError:
                raise ServiceError(grpc.StatusCode.CANCELLED,
                                   "the upload ended without its digest; nothing was "
                                   "kept") from None
            if digest != mine:
                raise invalid("the upload's BLAKE3 digest is not the bytes': the file was "
                              "damaged on the way; nothing was kept")
            resp = inc.finish()
        conn.sendall(wire.frame(cmpb.ImageTransferResult(image=resp.image)))
        log.info("%s uploaded image %s (%d bytes) through the data port", ticket.who,
                 ticket.name, ticket.size)

    def _download(self, conn: socket.socket, ticket: Ticket) -> None:
        f, done = self.transfers.outgoing(ticket.who, ticket.name)
        try:
            size = os.fstat(f.fileno()).st_size
            conn.sendall(wire.frame(cmpb.ImageTransferResult(
                image=pb.Image(name=ticket.name, size_bytes=size))))
            try:
                digest = bulk.send_file(conn, f, str(f.name), size)
            except EOFError as exc:  # shrank: the client sees too few bytes, keeps nothing
                raise ConnectionError(str(exc)) from None
            conn.sendall(digest)
        finally:
            done()
