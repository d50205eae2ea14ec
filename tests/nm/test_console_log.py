"""The console log reader against files rotated as virtlogd rotates them (a
writer here does the same renames: the current file to .0, .0 to .1 ...,
dropping the oldest beyond max_backups), without libvirt."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tashi.nm.console import LogReader, log_files


class Rotating:
    """virtlogd's rotating file writer: appends, and at `max_size` renames."""

    def __init__(self, path: Path, max_size: int, max_backups: int) -> None:
        self.path, self.max_size, self.max_backups = path, max_size, max_backups
        self.written = b""

    def rotate(self) -> None:
        oldest = self.path.with_name(f"{self.path.name}.{self.max_backups - 1}")
        if oldest.exists():
            oldest.unlink()
        for i in range(self.max_backups - 2, -1, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.path.exists():
            self.path.rename(self.path.with_name(f"{self.path.name}.0"))

    def write(self, data: bytes) -> None:
        self.written += data
        while data:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size >= self.max_size:
                self.rotate()
                size = 0
            part, data = data[:self.max_size - size], data[self.max_size - size:]
            with open(self.path, "ab") as fh:
                fh.write(part)


def read_all(reader: LogReader) -> bytes:
    return b"".join(reader.read())


def read_once(path: Path, tail_bytes: int = 0) -> bytes:
    reader = LogReader(path, tail_bytes)
    try:
        return read_all(reader)
    finally:
        reader.close()


def test_the_kept_log_in_order_and_its_tail(tmp_path: Path) -> None:
    log = Rotating(tmp_path / "tashi-1.log", max_size=100, max_backups=3)
    assert read_once(log.path) == b"", "no log yet"
    data = b"".join(b"line %03d\n" % i for i in range(40))  # 360 bytes: .2 .1 .0 and 60
    log.write(data)
    assert [p.name for p, _st in log_files(log.path)] == [
        "tashi-1.log.2", "tashi-1.log.1", "tashi-1.log.0", "tashi-1.log"]
    assert all(st.st_size <= 100 for _p, st in log_files(log.path))
    kept = data[-(3 * 100 + 60):]
    assert read_once(log.path) == kept == data, "within the cap: all of it"
    for tail in (1, 59, 60, 61, 100, 160, 161, 359, 360, 10_000):
        assert read_once(log.path, tail) == kept[-tail:], tail
    log.write(b"x" * 400)  # past the cap: the oldest files are gone
    got = read_once(log.path)
    assert len(got) == 360 and got == log.written[-360:]


def test_following_across_rotations(tmp_path: Path) -> None:
    log = Rotating(tmp_path / "tashi-2.log", max_size=64, max_backups=3)
    reader = LogReader(log.path)
    assert read_all(reader) == b""
    rng = random.Random(7)
    seen = b""
    unread = 0
    for step in range(300):
        # at most 128 bytes between reads (three rotations): what max_backups keeps
        log.write(bytes(rng.choice(b"abcdefgh\n") for _ in range(rng.randint(0, 64))))
        unread += 1
        if unread == 2 or rng.random() < 0.5:
            seen += read_all(reader)
            unread = 0
            assert log.written.startswith(seen), step
    seen += read_all(reader)
    reader.close()
    assert seen == log.written


def test_the_open_file_is_read_to_its_end_even_after_it_is_rotated_away(
        tmp_path: Path) -> None:
    log = Rotating(tmp_path / "tashi-3.log", max_size=10, max_backups=2)
    reader = LogReader(log.path)
    log.write(b"0123456")
    assert read_all(reader) == b"0123456"
    # four rotations before the next read: its file is deleted, and so is the next
    log.write(b"789" + b"a" * 10 + b"b" * 10 + b"c" * 10 + b"d")
    assert not any(st.st_ino == os.fstat(reader._fh.fileno()).st_ino  # type: ignore[union-attr]
                   for _p, st in log_files(log.path))
    # the rest of its own file, then the oldest file kept: only whole files are lost
    assert read_all(reader) == b"789" + b"b" * 10 + b"c" * 10 + b"d"
    assert reader.overruns == 1, "and it says so"
    log.write(b"dd")
    assert read_all(reader) == b"dd"
    reader.close()


def test_a_rotation_half_done_waits_for_the_new_file(tmp_path: Path) -> None:
    log = Rotating(tmp_path / "tashi-4.log", max_size=1000, max_backups=2)
    reader = LogReader(log.path)
    log.write(b"abc")
    assert read_all(reader) == b"abc"
    with open(log.path, "ab") as fh:
        fh.write(b"def")  # appended just before the rename
    log.path.rename(log.path.with_name("tashi-4.log.0"))  # renamed, no new file yet
    assert read_all(reader) == b"def"
    log.write(b"ghi")
    assert read_all(reader) == b"ghi"
    reader.close()


def test_a_rotation_while_the_files_are_listed_skips_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in a real run: the listing stat'ed .1 (the open file), then virtlogd
    rotated, then the listing found the newer files at .0 and the current name:
    the file that had been .0 was never read."""
    log = Rotating(tmp_path / "tashi-5.log", max_size=10, max_backups=3)
    reader = LogReader(log.path)
    log.write(b"a" * 10)
    assert read_all(reader) == b"a" * 10
    log.write(b"b" * 10 + b"c" * 5)  # the open file is now .1; .0 holds the b's
    real_stat = os.stat
    armed = [True]

    def stat(p: object, *args: object, **kw: object) -> os.stat_result:
        st = real_stat(p, *args, **kw)  # type: ignore[arg-type]
        if armed[0] and str(p).endswith(".log.1"):
            armed[0] = False
            log.write(b"c" * 5 + b"d" * 3)  # a rotation right after the listing saw .1
        return st

    monkeypatch.setattr(os, "stat", stat)
    assert read_all(reader) == b"b" * 10 + b"c" * 10 + b"d" * 3
    reader.close()
