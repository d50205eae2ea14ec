"""`tashi console` (the real command) against a cluster manager and a node manager
whose serial port is a fake that answers upper-cased (tests/cm/test_consoles.py):
the log, its tail, a follow, refusals, and --interactive both without a terminal
(stdin's lines) and on one (raw mode, Ctrl-] leaves, the terminal restored)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import termios

from tests.cm.test_consoles import Site, site  # noqa: F401 - the fixture
from tests.harness import bin_path, wait_for


def tashi(s: Site, *args: str, user: str = "alice", **kw: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TASHI_CM": s.cm.address, "TASHI_USER": user}
    return subprocess.Popen([bin_path("tashi"), "console", *args], env=env,  # type: ignore[call-overload]
                            stdout=kw.pop("stdout", subprocess.PIPE),
                            stderr=subprocess.PIPE, **kw)


def run(s: Site, *args: str, user: str = "alice") -> tuple[int, bytes, str]:
    p = tashi(s, *args, user=user, stdin=subprocess.DEVNULL)
    out, err = p.communicate(timeout=30)
    return p.returncode, out, err.decode()


def test_the_log_its_tail_and_refusals(site: Site) -> None:  # noqa: F811
    assert run(site, "--instance", "web") == (0, b"TASHI-GUEST-UP\ntick 1\n", "")
    assert run(site, "--instance", str(site.iid), "--tail", "7")[:2] == (0, b"tick 1\n")
    code, _out, err = run(site, "--instance", "web", user="bob")
    assert code == 1 and "PERMISSION_DENIED" in err and "Traceback" not in err
    code, _out, err = run(site, "--instance", "web", "--interactive", user="bob")
    assert code == 1 and "PERMISSION_DENIED" in err
    code, _out, err = run(site, "--instance", "web", "--interactive", "--follow")
    assert code == 2 and "--interactive" in err


def test_follow_until_the_vm_ends_or_ctrl_c(site: Site) -> None:  # noqa: F811
    p = tashi(site, "--instance", "web", "--follow", stdin=subprocess.DEVNULL)
    again = p
    assert p.stdout is not None
    try:
        assert p.stdout.readline() == b"TASHI-GUEST-UP\n"
        assert p.stdout.readline() == b"tick 1\n"
        with open(site.driver.log_path(site.iid), "ab") as fh:
            fh.write(b"tick 2\n")
        assert p.stdout.readline() == b"tick 2\n"
        p.send_signal(signal.SIGINT)  # Ctrl-C
        assert p.wait(10) == 130
        again = tashi(site, "--instance", "web", "-f", stdin=subprocess.DEVNULL)
        assert again.stdout is not None and again.stdout.readline() == b"TASHI-GUEST-UP\n"
        site.driver.running.discard(site.iid)  # the VM ends: so does the follow
        assert again.stdout.read() == b"tick 1\ntick 2\n"  # up to the end of the output
        assert again.wait(10) == 0
    finally:
        for proc in (p, again):
            proc.kill()
            proc.communicate()


def test_interactive_without_a_terminal_types_stdins_lines(site: Site) -> None:  # noqa: F811
    p = tashi(site, "--instance", "web", "--interactive", "--linger", "0.3",
              stdin=subprocess.PIPE)
    out, err = p.communicate(b"uname\nls /\n", timeout=20)
    assert p.returncode == 0, err
    assert out == b"UNAME\nLS /\n"


def test_interactive_on_a_terminal_is_raw_and_ctrl_bracket_leaves(site: Site) -> None:  # noqa: F811
    leader, follower = pty.openpty()
    before = termios.tcgetattr(follower)
    p = tashi(site, "--instance", "web", "--interactive", stdin=follower, stdout=follower)
    seen = bytearray()

    def output() -> bytes:
        while select.select([leader], [], [], 0.05)[0]:
            seen.extend(os.read(leader, 1024))
        return bytes(seen)

    try:
        wait_for(lambda: site.driver.sessions, what="the session opened")
        wait_for(lambda: termios.tcgetattr(follower) != before, what="raw mode")
        os.write(leader, b"abc\x03")  # raw: no line editing, and Ctrl-C goes to the guest
        wait_for(lambda: b"ABC\x03" in output(), what="the answer")
        os.write(leader, b"\x1d")  # Ctrl-] leaves
        assert p.wait(10) == 0
        wait_for(lambda: site.driver.sessions[0].closed.is_set(), what="the session ended")
        assert termios.tcgetattr(follower) == before, "the terminal is restored"
        assert b"Ctrl-] leaves" in p.stderr.read()  # type: ignore[union-attr]
    finally:
        p.kill()
        p.communicate()
        os.close(follower)
        os.close(leader)
