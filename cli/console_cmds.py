"""`tashi console`: an instance's serial console.

- `tashi console --instance NAME [--tail BYTES] [--follow]`: the console as
  its host logged it (the last BYTES of it), then with --follow what the
  guest writes, until the VM ends there or Ctrl-C (like `kubectl logs -f`).
- `tashi console --instance NAME --interactive`: the serial port read-write.
  On a terminal, raw mode (every key goes to the guest, Ctrl-C included);
  Ctrl-] leaves and the terminal is restored.  With stdin not a terminal,
  stdin's lines are typed and the output printed; once stdin ends, it leaves
  after --linger seconds without output (so scripts and tests can drive it).
"""

from __future__ import annotations

import argparse
import os
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from typing import BinaryIO

from tashi.cli.context import Context, UsageError
from tashi.runtime.client import ConsoleStream

ESCAPE = b"\x1d"  # Ctrl-]


def console(ctx: Context) -> int:
    a = ctx.args
    if a.tail < 0:
        raise UsageError("--tail must not be negative")
    if a.linger < 0:
        raise UsageError("--linger must not be negative")
    if a.interactive:
        if a.follow or a.tail:
            raise UsageError("--interactive is the live serial port; --follow and --tail "
                             "are for its log")
        return interactive(ctx)
    out = sys.stdout.buffer
    with ctx.client().read_console(a.instance, follow=a.follow, tail_bytes=a.tail) as stream:
        for data in stream:
            out.write(data)
            out.flush()
    return 0


class Session:
    """One attachment: leaving cancels the call from whichever thread decides to."""

    def __init__(self) -> None:
        self.stream: ConsoleStream | None = None
        self.left = threading.Event()
        self.last_output = time.monotonic()

    def started(self, stream: ConsoleStream) -> None:
        self.stream = stream
        if self.left.is_set():
            stream.cancel()

    def leave(self) -> None:
        self.left.set()
        if self.stream is not None:
            self.stream.cancel()


def keys(fd: int, session: Session) -> Iterator[bytes]:
    """What is typed on the terminal, until Ctrl-]."""
    while not session.left.is_set():
        data = os.read(fd, 1024)
        if ESCAPE in data or not data:
            before = data.split(ESCAPE, 1)[0]
            if before:
                yield before
            session.leave()
            return
        yield data


def lines(stdin: BinaryIO, session: Session, linger: float) -> Iterator[bytes]:
    """stdin's lines; once it ends, leave when the output has been quiet `linger` s."""
    yield from stdin

    def wait_then_leave() -> None:
        while not session.left.is_set():
            quiet = time.monotonic() - session.last_output
            if quiet >= linger:
                session.leave()
                return
            time.sleep(min(0.1, linger - quiet))

    threading.Thread(target=wait_then_leave, name="linger", daemon=True).start()


def interactive(ctx: Context) -> int:
    a = ctx.args
    fd = sys.stdin.fileno()
    on_tty = os.isatty(fd)
    session = Session()
    typed = keys(fd, session) if on_tty else lines(sys.stdin.buffer, session, a.linger)
    client = ctx.client()  # a bad flag is said before the terminal changes
    saved = termios.tcgetattr(fd) if on_tty else None
    if on_tty:
        sys.stderr.write(f"tashi: the serial console of {a.instance}; Ctrl-] leaves\n")
        sys.stderr.flush()
    out = sys.stdout.buffer
    stream = client.attach_console(a.instance, typed)
    session.started(stream)
    try:
        if on_tty:
            tty.setraw(fd)
        for data in stream:
            session.last_output = time.monotonic()
            out.write(data)
            out.flush()
    finally:
        stream.cancel()
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            sys.stderr.write("\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("console", help="an instance's serial console: its log (--follow "
                                       "to go on), or read-write with --interactive")
    p.add_argument("--instance", required=True, help="NAME or ID")
    p.add_argument("-f", "--follow", action="store_true",
                   help="after the log, what the guest writes, until the VM ends or Ctrl-C")
    p.add_argument("--tail", type=int, default=0, metavar="BYTES",
                   help="only the last BYTES of the log (default: all that is kept)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="attach to the serial port read-write (Ctrl-] leaves)")
    p.add_argument("--linger", type=float, default=2.0, metavar="SECONDS",
                   help="--interactive without a terminal: once stdin ends, leave after "
                        "this long without output (default 2)")
    p.set_defaults(func=console)
