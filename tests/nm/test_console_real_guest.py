"""Consoles of a real Linux guest under QEMU (TCG), through a real CM and NM over
mutual TLS, with `tashi console` (the real command) as its owner runs it.

One guest boots for the whole file (its serial console prints TASHI-GUEST-UP,
then a tick a second, and a shell reads commands from it); the tests run in
the order written: the log and a follow, an interactive session (one at a
time), another user refused, virtlogd's rotation with a small cap (set for
the private virtlogd here), and last the guest powering off, which ends the
sessions by themselves.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tashi.runtime.client import ClusterClient, ConsoleStream, TashiError
from tashi.v1 import resources_pb2 as pb
from tests.guests import CMDLINE, GUEST_POWEROFF, GUEST_UP, PrivateLibvirt, guest_files
from tests.harness import (
    CMProcess,
    NMProcess,
    Site,
    activate,
    bin_path,
    start_cm,
    stop_all,
    up_host,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

MAX_SIZE = 4096  # virtlogd.conf: each console log file at most this ...
MAX_BACKUPS = 3  # ... and this many rotated files besides the current one
TICK = re.compile(rb"^tick (\d+)", re.M)


@dataclass
class Guest:
    site: Site
    cm: CMProcess
    nm: NMProcess
    libvirt: PrivateLibvirt
    iid: int
    alice: ClusterClient
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.nm.state_dir / "console" / f"tashi-{self.iid}.log"

    def tashi(self, *args: str, user: str = "alice",
              stdin: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        ca, cert, key = self.site.files("user", user)
        p = subprocess.Popen(
            [bin_path("tashi"), "console", "--instance", "tiny", *args, "--cm",
             self.cm.address, "--user", user, "--tls-ca", str(ca), "--tls-cert", str(cert),
             "--tls-key", str(key)], stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.procs.append(p)
        return p


class Collect:
    """A console stream read on a thread into `data`."""

    def __init__(self, stream: ConsoleStream | subprocess.Popen[bytes]) -> None:
        self.data = bytearray()
        self.error: Exception | None = None
        self._source = stream
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if isinstance(self._source, subprocess.Popen):
                assert self._source.stdout is not None
                while chunk := self._source.stdout.read1(4096):
                    self.data.extend(chunk)
            else:
                for chunk in self._source:
                    self.data.extend(chunk)
        except Exception as exc:  # checked by the test
            self.error = exc

    def has(self, what: bytes) -> bool:
        return what in self.data

    def has_line(self, line: bytes) -> bool:
        """`line` at the start of a line (not inside the echo of a typed command)."""
        return re.search(rb"^" + re.escape(line), self.data, re.M) is not None

    def ticks(self) -> list[int]:
        return [int(n) for n in TICK.findall(bytes(self.data))]


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd needs root (unshare)")
    tmp = tmp_path_factory.mktemp("console-guest")
    images = tmp / "images"
    images.mkdir()
    guest_files(images)
    lv = PrivateLibvirt(tmp / "libvirt", virtlogd_conf=f"max_size = {MAX_SIZE}\n"
                                                      f"max_backups = {MAX_BACKUPS}\n")
    procs: list[CMProcess | NMProcess] = []
    g: Guest | None = None
    try:
        site = Site(tmp / "ca")
        cm = start_cm(tmp, site=site, images=str(images))
        procs.append(cm)
        root = cm.client()
        for user in ("alice", "bob"):
            root.create_user(user)
        root.create_host("g1")
        nm = NMProcess(tmp / "nm", cm.address, "g1", site=site, libvirt_uri="qemu:///system",
                       images=images, prefix=lv.enter())
        procs.append(nm)
        host = up_host(root, "g1")
        alice = cm.client("alice")
        [inst] = alice.create_instances(pb.Instance(name="tiny", spec=pb.InstanceSpec(
            cores=1, memory_mib=128,
            hints={"kernel": "vmlinuz", "initrd": "initrd.gz", "cmdline": CMDLINE})))
        activate(root, inst.id, host.id)
        wait_state(root, inst.id, pb.INSTANCE_STATE_RUNNING, timeout=30)
        g = Guest(site, cm, nm, lv, inst.id, alice)
        wait_for(lambda: g.log.exists() and GUEST_UP.encode() in g.log.read_bytes(), 60,
                 what="the guest booted")
        yield g
    finally:  # each step whatever the one before did: nothing started is left running
        try:
            for p in g.procs if g is not None else []:
                p.kill()
                p.wait(10)
                for pipe in (p.stdin, p.stdout, p.stderr):
                    if pipe is not None:
                        pipe.close()
        finally:
            try:
                stop_all(*reversed(procs))
            finally:
                lv.stop()


def test_follow_shows_the_boot_and_the_ticks(guest: Guest) -> None:
    p = guest.tashi("--follow")
    out = Collect(p)
    wait_for(lambda: out.has(GUEST_UP.encode()), 20, what="the boot line")
    first = wait_for(lambda: out.ticks(), 20, what="a tick")[-1]
    wait_for(lambda: out.ticks()[-1] >= first + 2, 20, what="later ticks, live")
    assert out.ticks() == list(range(out.ticks()[0], out.ticks()[-1] + 1)), "in order"
    p.send_signal(signal.SIGINT)  # Ctrl-C
    assert p.wait(10) == 130
    # without --follow: what is logged, and its tail
    p = guest.tashi("--tail", "200")
    out_tail, _err = p.communicate(timeout=20)
    assert p.returncode == 0 and 0 < len(out_tail) <= 200 + 64 and b"tick " in out_tail


def test_interactive_answers_a_command_and_is_one_at_a_time(guest: Guest) -> None:
    p = guest.tashi("--interactive", "--linger", "0.5", stdin=subprocess.PIPE)
    out = Collect(p)
    assert p.stdin is not None
    wait_for(lambda: out.ticks(), 20, what="the session open (the ticks come through it)")
    with guest.cm.client().attach_console(guest.iid, []) as other:  # even an admin's
        with pytest.raises(TashiError) as err:
            next(other)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION, err.value
    p.stdin.write(b"echo hello-$((6*7))\n")
    p.stdin.flush()
    wait_for(lambda: out.has(b"hello-42"), 20, what="the shell's answer")
    p.stdin.close()  # stdin ends: it leaves after --linger quiet seconds
    assert p.wait(20) == 0, p.stderr.read()  # type: ignore[union-attr]
    assert GUEST_UP.encode() not in out.data, "live output only, not the log"
    # the console is free again (the node manager closes it when the caller hangs up)
    wait_for(lambda: answer(guest.alice, guest.iid, b"echo again-$((1+1))\n", b"again-2"),
             10, what="a new session")


def answer(client: ClusterClient, iid: int, command: bytes, wanted: bytes) -> bool:
    """Attach, type `command`, and read until `wanted`; False if the console is busy."""
    try:
        with client.attach_console(iid, [command]) as session:
            seen = bytearray()
            for chunk in session:
                seen.extend(chunk)
                if wanted in seen:
                    return True
    except TashiError as exc:
        if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
            raise
    return False


def test_another_users_console_is_denied(guest: Guest) -> None:
    for args in ((), ("--interactive",)):
        p = guest.tashi(*args, user="bob")
        _out, err = p.communicate(timeout=20)
        assert p.returncode == 1 and b"PERMISSION_DENIED" in err, err


def test_virtlogd_rotates_at_the_cap_and_the_reader_keeps_the_order(guest: Guest) -> None:
    follow = Collect(guest.alice.read_console(guest.iid, follow=True, tail_bytes=1))
    # About 33 KB through the serial port, twice the cap, at some 7 KB/s: a follower
    # that lags a whole cap (16 KB) behind loses files, and says so in the NM's log.
    lines = 1000
    with guest.alice.attach_console(guest.iid, [
            f"i=0; while [ $i -lt {lines} ]; do i=$((i+1)); "
            'echo "line $i of the rotation test"; [ $((i % 25)) = 0 ] && sleep 0.1; done; '
            "echo rotation-done\n".encode()]) as s:
        seen = bytearray()
        for chunk in s:
            seen.extend(chunk)
            if re.search(rb"^rotation-done", seen, re.M):
                break
    files = sorted(guest.log.parent.glob(guest.log.name + "*"))
    sizes = {f.name: f.stat().st_size for f in files}
    assert len(files) <= MAX_BACKUPS + 1 and all(s <= MAX_SIZE for s in sizes.values()), sizes
    assert {f"{guest.log.name}.{i}" for i in range(MAX_BACKUPS)} <= set(sizes), sizes
    # everything kept, oldest file first: the lines in order, up to the last one
    kept = b"".join(guest.alice.read_console(guest.iid))
    assert len(kept) <= (MAX_BACKUPS + 1) * MAX_SIZE
    numbers = [int(n) for n in re.findall(rb"^line (\d+) of", kept, re.M)]
    assert numbers == list(range(numbers[0], lines + 1)) and numbers[0] > 1, numbers[:3]
    # the rotated files are full (virtlogd ends a file early at a newline within 80 bytes
    # of the cap, so as not to split a line)
    assert len(kept) >= MAX_BACKUPS * (MAX_SIZE - 80)
    # a follow that was open throughout got every line, in order, across rotations
    wait_for(lambda: follow.has_line(b"rotation-done"), 20, what="the follower caught up")
    followed = [int(n) for n in re.findall(rb"^line (\d+) of", bytes(follow.data), re.M)]
    assert followed == list(range(1, lines + 1)), (
        "rotated past the follower" if "rotated past" in guest.nm.log_tail(200) else "")
    # the tail of the log, exactly, while the guest is paused (no tick meanwhile)
    guest.alice.instance_action("Pause", guest.iid)
    wait_state(guest.alice, guest.iid, pb.INSTANCE_STATE_PAUSED)
    try:
        whole = b"".join(guest.alice.read_console(guest.iid))
        for tail in (1, 100, MAX_SIZE + 10, 3 * MAX_SIZE):
            assert b"".join(guest.alice.read_console(guest.iid, tail_bytes=tail)) == \
                whole[-tail:], tail
    finally:
        guest.alice.instance_action("Unpause", guest.iid)
        wait_state(guest.alice, guest.iid, pb.INSTANCE_STATE_RUNNING)
    follow_stream = follow._source
    assert isinstance(follow_stream, ConsoleStream)
    follow_stream.cancel()


def test_the_guest_powering_off_ends_the_follow_and_the_session(guest: Guest) -> None:
    follow = Collect(guest.alice.read_console(guest.iid, follow=True, tail_bytes=1))
    typed: queue.Queue[bytes | None] = queue.Queue()  # nothing typed, never half-closed
    session = Collect(guest.alice.attach_console(guest.iid, iter(typed.get, None)))
    wait_for(lambda: follow.data and session.ticks(), 20, what="both open")
    guest.alice.instance_action("Shutdown", guest.iid)
    follow.thread.join(30)
    session.thread.join(30)
    typed.put(None)
    assert not follow.thread.is_alive() and follow.error is None
    assert GUEST_POWEROFF.encode() in follow.data
    assert not session.thread.is_alive(), "the session ended with the VM"
    wait_state(guest.alice, guest.iid, -1, timeout=30)
