"""Moving a file's bytes over a socket with their BLAKE3 digest, both ends of
the image data port (runtime/data_port.py, cm/data_port.py).

The work is spread over the machine: a sender on a plain socket has the kernel
send the file (sendfile: no copy through this process) while a second thread
hashes it through a memory map; over TLS, and on the receiving side, one
thread moves the bytes (read or recv, then send or write) while another hashes
the block before, through a small ring of buffers.  The hashing threads run
beside the I/O because both release the GIL on large blocks.
"""

from __future__ import annotations

import io
import os
import queue
import socket
import ssl
import threading
from collections.abc import Callable

import blake3

BLOCK = 4 << 20  # bytes per read, write and hash step
RING = 3  # buffers in flight between the mover and the hasher

Progress = Callable[[int, int], None]


class _Hasher(threading.Thread):
    """Hashes the blocks it is handed, in order, returning each buffer to `free`."""

    def __init__(self, free: queue.Queue[bytearray]) -> None:
        super().__init__(name="bulk-hash", daemon=True)
        self.free = free
        self.todo: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self.hasher = blake3.blake3()

    def run(self) -> None:
        while (item := self.todo.get()) is not None:
            buf, n = item
            self.hasher.update(memoryview(buf)[:n])
            self.free.put(buf)

    def digest(self) -> bytes:
        self.todo.put(None)
        self.join()
        return self.hasher.digest()


def _ring() -> queue.Queue[bytearray]:
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(RING):
        free.put(bytearray(BLOCK))
    return free


def _mapped_digest(path: str, size: int, out: list[bytes]) -> None:
    out.append(blake3.blake3().update_mmap(path).digest() if size else
               blake3.blake3().digest())


def send_file(sock: socket.socket, f: io.FileIO, path: str, size: int,
              progress: Progress | None = None) -> bytes:
    """Send the first `size` bytes of the open file `f` (at `path`); their digest.
    A file that turns out shorter raises EOFError (the peer sees too few bytes)."""
    fd = f.fileno()
    if not isinstance(sock, ssl.SSLSocket):
        if os.fstat(fd).st_size != size:
            raise EOFError(f"{path} is no longer {size} bytes long")
        got: list[bytes] = []
        hashing = threading.Thread(target=_mapped_digest, args=(path, size, got),
                                   name="bulk-hash", daemon=True)
        hashing.start()
        sent = 0
        try:
            while sent < size:
                n = min(BLOCK, size - sent)
                done = sock.sendfile(f, sent, n)
                if done < n:
                    raise EOFError(f"{path} shrank while being sent")
                sent += n
                if progress is not None:
                    progress(sent, size)
        finally:
            hashing.join()
        return got[0]
    free = _ring()
    hasher = _Hasher(free)
    hasher.start()
    sent = 0
    try:
        while sent < size:
            buf = free.get()
            n = os.preadv(fd, [memoryview(buf)[:min(BLOCK, size - sent)]], sent)
            if n <= 0:
                raise EOFError(f"{path} shrank while being sent")
            sock.sendall(memoryview(buf)[:n])
            hasher.todo.put((buf, n))
            sent += n
            if progress is not None:
                progress(sent, size)
    finally:
        digest = hasher.digest()
    return digest


def receive(sock: socket.socket, size: int, write: Callable[[memoryview], None],
            progress: Progress | None = None) -> bytes:
    """Exactly `size` bytes from `sock`, each block handed to `write`; their digest.
    ConnectionError if the peer closes first."""
    free = _ring()
    hasher = _Hasher(free)
    hasher.start()
    got = 0
    try:
        while got < size:
            buf = free.get()
            view = memoryview(buf)
            want = min(BLOCK, size - got)
            n = 0
            while n < want:  # fill the block: fewer, larger writes and hash steps
                k = sock.recv_into(view[n:want])
                if k == 0:
                    raise ConnectionError(f"the connection closed after {got + n} of {size} "
                                          "bytes")
                n += k
            write(view[:n])
            hasher.todo.put((buf, n))
            got += n
            if progress is not None:
                progress(got, size)
    finally:
        digest = hasher.digest()
    return digest
