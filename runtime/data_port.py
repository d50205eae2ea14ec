"""The cluster manager's image data port: its wire format and its client side.

A transfer starts with OpenImageTransfer (gRPC, authenticated as every call is),
which answers a port and a single-use ticket.  Then, on one TCP connection to
that port (TLS checked against the site CA when the CM's API uses TLS; the
ticket is the only credential):

    client: the ticket (64 ASCII hex digits)
    server: a result frame: OK (for a download: the image, its size_bytes the
            bytes that follow) or the refusal, then the connection closes
    upload:   client: size_bytes bytes, then their BLAKE3 digest (32 bytes)
              server: a result frame: the image installed, or why nothing was kept
    download: server: size_bytes bytes, then their BLAKE3 digest (32 bytes)

A result frame is a 4-byte big-endian length and an ImageTransferResult.  The
bytes move in large reads and writes with no per-message framing, which is
what makes this several times faster than the gRPC streams (bench/bench_images.py).
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

import grpc

from tashi.runtime import bulk
from tashi.runtime.rpc import TashiError
from tashi.runtime.tls import Tls
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

TICKET_CHARS = 64
DIGEST_BYTES = 32
MAX_FRAME = 1 << 20  # a result frame's size at most
CONNECT_SECONDS = 10.0
# Longest wait for the peer to move any bytes before the transfer is abandoned.
IDLE_SECONDS = 60.0

Progress = Callable[[int, int], None]


def read_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes, or ConnectionError if the peer closes first."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError(f"the connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def frame(result: cmpb.ImageTransferResult) -> bytes:
    body = result.SerializeToString()
    return struct.pack(">I", len(body)) + body


def read_frame(sock: socket.socket) -> cmpb.ImageTransferResult:
    (n,) = struct.unpack(">I", read_exact(sock, 4))
    if n > MAX_FRAME:
        raise ConnectionError(f"a result frame of {n} bytes is past the {MAX_FRAME}-byte limit")
    return cmpb.ImageTransferResult.FromString(read_exact(sock, n))


def _raise_for(result: cmpb.ImageTransferResult) -> None:
    if result.code != grpc.StatusCode.OK.value[0]:
        code = next((c for c in grpc.StatusCode if c.value[0] == result.code),
                    grpc.StatusCode.UNKNOWN)
        raise TashiError(code, result.message or "the data port refused the transfer")


def _connect(host: str, port: int, ticket: str, tls: Tls | None
             ) -> tuple[socket.socket, cmpb.ImageTransferResult]:
    """A connection past its ticket, and the data port's first word (OK)."""
    try:
        raw = socket.create_connection((host, port), timeout=CONNECT_SECONDS)
    except OSError as exc:
        raise TashiError(grpc.StatusCode.UNAVAILABLE,
                         f"cannot reach the data port {host}:{port}: {exc}") from None
    sock: socket.socket = raw
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=tls.ca.decode())
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            sock = ctx.wrap_socket(raw, server_hostname=host)
        sock.settimeout(IDLE_SECONDS)
        sock.sendall(ticket.encode("ascii"))
        first = read_frame(sock)
        _raise_for(first)
        return sock, first
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise TashiError(grpc.StatusCode.UNAVAILABLE,
                         f"the data port {host}:{port} failed: {exc}") from None
    except BaseException:
        sock.close()
        raise


def _lost(sock: socket.socket, what: str, exc: BaseException) -> TashiError:
    """Why the CM ended a transfer early, if it said, else what the socket saw."""
    try:
        sock.settimeout(2.0)
        result = read_frame(sock)
        _raise_for(result)
    except TashiError as said:
        return said
    except (OSError, ValueError):
        pass
    return TashiError(grpc.StatusCode.UNAVAILABLE, f"the {what} was cut short: {exc}")


def upload(host: str, port: int, ticket: str, path: str | os.PathLike[str],
           tls: Tls | None = None, progress: Progress | None = None) -> pb.Image:
    """Send the file at `path` with a ticket for its upload; the image installed."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        sock, _go = _connect(host, port, ticket, tls)
        with sock:
            try:
                try:
                    digest = bulk.send_file(sock, f, str(path), size, progress)
                except EOFError:
                    digest = b""  # the file shrank: too few bytes, the CM keeps nothing
                sock.sendall(digest)
                result = read_frame(sock)
            except (OSError, ssl.SSLError) as exc:
                raise _lost(sock, "upload", exc) from None
            _raise_for(result)
            return result.image


def download(host: str, port: int, ticket: str, path: str | os.PathLike[str],
             tls: Tls | None = None, progress: Progress | None = None) -> tuple[int, str]:
    """The image a download ticket names into `path` (written beside it under a
    hidden name, renamed once its size and digest check out); (size, "blake3:HEX")."""
    path = Path(path)
    sock, head = _connect(host, port, ticket, tls)
    with sock, bulk.staged(path) as (fd, keep):
        try:
            size = head.image.size_bytes
            digest = bulk.receive_file(sock, fd, size, IDLE_SECONDS, progress)
            sent_digest = read_exact(sock, DIGEST_BYTES)
        except (OSError, ssl.SSLError) as exc:
            raise TashiError(grpc.StatusCode.DATA_LOSS,
                             f"the download was cut short: {exc}; nothing was kept") from None
        if sent_digest != digest:
            raise TashiError(grpc.StatusCode.DATA_LOSS,
                             "the download's BLAKE3 digest is not the cluster manager's: it "
                             "was damaged on the way; nothing was kept")
        keep()
    return size, f"blake3:{digest.hex()}"
