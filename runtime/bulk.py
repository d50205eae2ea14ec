"""Moving a file's bytes over a socket with their BLAKE3 digest, both ends of
the image data port (runtime/data_port.py, cm/data_port.py).

On a plain socket the kernel moves the bytes and no copy goes through this
process: the sender uses sendfile, the receiver splice (socket -> pipe ->
file), and on each side a second thread hashes the file through a memory map
(the receiver's follows what has landed).  Over TLS one thread moves the bytes
through a small ring of buffers (the sender reads and sends; the receiver
only receives, so the socket is drained while earlier blocks are written) and
a thread per stage works on the blocks behind it: writing them, hashing them.
The threads run side by side because the system calls and BLAKE3 release the
GIL on large blocks.
"""

from __future__ import annotations

import fcntl
import io
import mmap
import os
import queue
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import blake3

BLOCK = 4 << 20  # bytes per read, write and hash step
RING = 4  # buffers in flight between the mover and the stages behind it

Progress = Callable[[int, int], None]


class _Ring:
    """Buffers handed round: taken by the mover, given back once every stage that
    was handed one is done with it."""

    def __init__(self) -> None:
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(RING):
            self.free.put(bytearray(BLOCK))
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        return self.free.get()

    def hand(self, buf: bytearray, n: int, stages: list[_Stage]) -> None:
        with self._lock:
            self._users[id(buf)] = len(stages)
        for stage in stages:
            stage.todo.put((buf, n))

    def done(self, buf: bytearray) -> None:
        with self._lock:
            self._users[id(buf)] -= 1
            last = self._users[id(buf)] == 0
        if last:
            self.free.put(buf)


class _Stage(threading.Thread):
    """One thing done to every block, in order, beside the mover (writing it, or
    hashing it); the first error is kept, and later blocks are only given back."""

    def __init__(self, ring: _Ring, work: Callable[[memoryview], object]) -> None:
        super().__init__(name="bulk-stage", daemon=True)
        self.ring = ring
        self.work = work
        self.todo: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        while (item := self.todo.get()) is not None:
            buf, n = item
            if self.error is None:
                try:
                    self.work(memoryview(buf)[:n])
                except BaseException as exc:  # raised again by the mover
                    self.error = exc
            self.ring.done(buf)


def _run_stages(ring: _Ring, stages: list[_Stage], move: Callable[[], None]) -> None:
    """`move` (the mover's loop) with `stages` running beside it; their first error
    is raised once all have stopped."""
    for stage in stages:
        stage.start()
    try:
        move()
    finally:
        for stage in stages:
            stage.todo.put(None)
        for stage in stages:
            stage.join()
    for stage in stages:
        if stage.error is not None:
            raise stage.error


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
    ring = _Ring()
    hasher = blake3.blake3()
    hashing = _Stage(ring, hasher.update)

    def move() -> None:
        sent = 0
        while sent < size:
            buf = ring.take()
            n = os.preadv(fd, [memoryview(buf)[:min(BLOCK, size - sent)]], sent)
            if n <= 0:
                raise EOFError(f"{path} shrank while being sent")
            sock.sendall(memoryview(buf)[:n])
            ring.hand(buf, n, [hashing])
            sent += n
            if progress is not None:
                progress(sent, size)

    _run_stages(ring, [hashing], move)
    return hasher.digest()


def receive(sock: socket.socket, size: int, write: Callable[[memoryview], None],
            progress: Progress | None = None) -> bytes:
    """Exactly `size` bytes from `sock`, each block handed to `write`; their digest.
    ConnectionError if the peer closes first."""
    ring = _Ring()
    hasher = blake3.blake3()
    stages = [_Stage(ring, write), _Stage(ring, hasher.update)]

    def move() -> None:
        got = 0
        while got < size:
            for stage in stages:  # the store refused a write: stop receiving
                if stage.error is not None:
                    return
            buf = ring.take()
            view = memoryview(buf)
            want = min(BLOCK, size - got)
            n = 0
            while n < want:  # fill the block: fewer, larger writes and hash steps
                k = sock.recv_into(view[n:want])
                if k == 0:
                    ring.free.put(buf)
                    raise ConnectionError(f"the connection closed after {got + n} of {size} "
                                          "bytes")
                n += k
            ring.hand(buf, n, stages)
            got += n
            if progress is not None:
                progress(got, size)

    _run_stages(ring, stages, move)
    return hasher.digest()


PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named by Python only from 3.10 on some builds


def receive_file(sock: socket.socket, fd: int, size: int, idle_seconds: float,
                 progress: Progress | None = None) -> bytes:
    """Exactly `size` bytes from `sock` into the file open at `fd` (from its start);
    their digest.  On a plain socket the kernel moves them (splice: socket -> pipe
    -> file, no copy through this process) while a thread hashes what has landed
    through a memory map; over TLS, `receive` with a write stage."""
    if isinstance(sock, ssl.SSLSocket) or size == 0:
        def write(block: memoryview) -> None:
            while block:
                block = block[os.write(fd, block):]
        return receive(sock, size, write, progress)
    os.ftruncate(fd, size)  # the map covers the whole file; the blocks fill it
    landed = [0]
    cond = threading.Condition()
    hasher = blake3.blake3()
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
                view, done = memoryview(mm), 0
                try:
                    while done < size:
                        with cond:
                            while landed[0] == done and not failed:
                                cond.wait()
                            if failed:
                                return
                            upto = landed[0]
                        hasher.update(view[done:upto])
                        done = upto
                finally:
                    view.release()
        except BaseException as exc:
            failed.append(exc)

    hashing = threading.Thread(target=follow, name="bulk-hash", daemon=True)
    hashing.start()
    r, w = os.pipe()
    try:
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe only means more calls
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        got = 0
        while got < size:
            try:
                n = os.splice(sock.fileno(), w, min(PIPE_BYTES, size - got))
            except BlockingIOError:
                if not poller.poll(idle_seconds * 1000):
                    raise TimeoutError(f"no bytes for {idle_seconds:g} s") from None
                continue
            if n == 0:
                raise ConnectionError(f"the connection closed after {got} of {size} bytes")
            left = n
            while left:
                left -= os.splice(r, fd, left, offset_dst=got + n - left)
            got += n
            with cond:
                landed[0] = got
                cond.notify()
            if progress is not None:
                progress(got, size)
    except BaseException as exc:
        with cond:
            failed.append(exc)
            cond.notify()
        raise
    finally:
        os.close(r)
        os.close(w)
        hashing.join()
    if failed:
        raise failed[0]
    return hasher.digest()


@contextmanager
def staged(path: Path) -> Iterator[tuple[int, Callable[[], None]]]:
    """A hidden file beside `path` to write (its descriptor) and `keep`, which
    puts it in place as `path` (mode 644); left without `keep`, it is removed,
    so nothing partial or unchecked ever stands under the name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    open_fd = [fd]

    def keep() -> None:
        os.close(open_fd.pop())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    try:
        yield fd, keep
    finally:
        if open_fd:
            os.close(open_fd.pop())
        if os.path.exists(tmp):
            os.unlink(tmp)
