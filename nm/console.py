"""A VM's serial console as the node manager serves it: the log (read across
the files a rotation leaves) and the interactive session's contract.

The log is written by the hypervisor's side, not by the node manager: with
libvirt, virtlogd appends what the guest's serial port carries to
`state_dir/console/tashi-<id>.log` and, past virtlogd.conf's `max_size`,
renames it to `.log.0` (the older `.log.0` to `.log.1` ..., keeping
`max_backups`) and starts a new file.  `LogReader` reads such a set of files
in order and follows it while it rotates, by inode: the file it has open is
finished once the name points elsewhere, and what comes next is the file
after it in the set (or the oldest one left, when the rotation went past it
meanwhile).  Pure file work, no hypervisor: unit-tested on its own.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 64 * 1024  # most bytes per message of a console stream


@dataclass(frozen=True)
class ConsoleLog:
    """Where a VM's console is logged on this host, and whether the VM still runs
    here (a follow ends when it does not)."""

    path: Path  # the current file; the rotated ones beside it as path.0, path.1 ...
    running: Callable[[], bool]


class ConsoleSession(ABC):
    """One interactive attachment to a VM's serial port."""

    @abstractmethod
    def recv(self, timeout: float) -> bytes | None:
        """What the guest wrote (b"" when nothing came within `timeout` seconds);
        None once the console is closed (the VM ended, or `close`)."""

    @abstractmethod
    def send(self, data: bytes) -> bool:
        """Type `data` into the serial port; False once the console is closed."""

    @abstractmethod
    def close(self) -> None:
        """Detach (idempotent, from any thread)."""


def log_files(path: Path) -> list[tuple[Path, os.stat_result]]:
    """The files of a rotated log, oldest first: `path.N` ... `path.1`, `path.0`,
    then `path` itself; only those that exist, each with its stat.

    A rotation while the files are looked at one by one would give a listing
    that skips a file (seen at its old name before the rotation, its successor
    at a new name after it); so the listing is taken until two in a row agree."""
    last: list[tuple[Path, os.stat_result]] | None = None
    for _attempt in range(10):
        found = _scan(path)
        if last is not None and [(p, st.st_ino) for p, st in found] == \
                [(p, st.st_ino) for p, st in last]:
            break
        last = found
    return found


def _scan(path: Path) -> list[tuple[Path, os.stat_result]]:
    backups: list[tuple[int, Path]] = []
    prefix = path.name + "."
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        names = []
    for name in names:
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            backups.append((int(name[len(prefix):]), path.parent / name))
    found = []
    for p in [p for _n, p in sorted(backups, reverse=True)] + [path]:
        try:
            found.append((p, os.stat(p)))
        except FileNotFoundError:
            continue  # rotated away between the listing and the stat
    return found


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


class LogReader:
    """Reads a rotated log in order: first what is kept (or its last `tail_bytes`),
    then, call after call, what was written since, across rotations.

    Once a file is open it is read to its end even after a rotation renamed or
    deleted it (an open file stays readable).  Only when virtlogd rotates more
    than `max_backups` times between two reads are whole files lost; the
    reader then goes on with the oldest file left."""

    def __init__(self, path: Path, tail_bytes: int = 0) -> None:
        self.path = path
        self._tail = max(0, tail_bytes)
        self._fh: BinaryIO | None = None
        # Times the rotation went past the open file before it was read to its end
        # (the reader lagged a whole cap behind: files after it may be lost).
        self.overruns = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def read(self) -> Iterator[bytes]:
        """What is there to read now, in chunks of at most CHUNK bytes; nothing when
        there is no log yet."""
        if self._fh is None:
            self._fh = self._first()
            if self._fh is None:
                return
        while True:
            yield from self._drain()
            after = self._next_file()
            if after is None:
                return
            yield from self._drain()  # what was appended just before the rotation
            self._fh.close()
            self._fh = after

    def _drain(self) -> Iterator[bytes]:
        assert self._fh is not None
        while chunk := self._fh.read(CHUNK):
            yield chunk

    def _open(self, path: Path, want: os.stat_result) -> BinaryIO | None:
        """`path` opened if it still is the file `want` describes (not rotated since)."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open across calls
        except FileNotFoundError:
            return None
        if not _same(os.fstat(fh.fileno()), want):
            fh.close()
            return None
        return fh

    def _first(self) -> BinaryIO | None:
        for _attempt in range(5):  # a rotation between the listing and the open: again
            files = log_files(self.path)
            if not files:
                return None
            # Skip whole files, then part of one, to leave the last `tail` bytes.
            skip = max(0, sum(st.st_size for _p, st in files) - self._tail) if self._tail else 0
            index = 0
            while index < len(files) - 1 and skip >= files[index][1].st_size:
                skip -= files[index][1].st_size
                index += 1
            fh = self._open(*files[index])
            if fh is not None:
                fh.seek(min(skip, files[index][1].st_size))
                return fh
        return None

    def _next_file(self) -> BinaryIO | None:
        """The file after the open one, once the open one is finished (the log's name
        points to a newer file, or the open one was deleted); None while the open
        one is still the current file, or mid-rotation."""
        assert self._fh is not None
        for _attempt in range(5):
            mine = os.fstat(self._fh.fileno())
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if mine.st_nlink > 0 and (current is None or _same(current, mine)):
                return None  # still the current file (or the new one is not made yet)
            files = log_files(self.path)
            index = next((i for i, (_p, st) in enumerate(files) if _same(st, mine)), None)
            if index is not None:
                later = files[index + 1:]
            elif mine.st_nlink == 0:
                later = files  # deleted: every file left is newer than it
                self.overruns += 1
            else:
                continue  # renamed between the stats: look again
            if not later:
                return None
            fh = self._open(*later[0])
            if fh is not None:
                return fh
        return None
