"""Real processes for tests: start a cluster manager (and friends) on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tashi.runtime.client import ClusterClient

LISTEN_RE = re.compile(r"listening on (\S+:\d+)")


class Process:
    """A service started as a child process; `address` from its 'listening on' line."""

    def __init__(self, argv: Sequence[str], log_path: Path, ready: re.Pattern[str] = LISTEN_RE,
                 timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self._log,
                                     env={**os.environ, **(env or {})})
        self.address = ""
        self.lines: list[str] = []
        found = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                if not self._log.closed:
                    self._log.write(raw)
                    self._log.flush()
                m = ready.search(line)
                if m and not found.is_set():
                    self.address = m.group(1) if m.groups() else ""
                    found.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self._pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self._log.closed:
            self._log.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()


def free_port() -> int:
    """A loopback port free right now (for services that must come back on the same port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bin_path(name: str) -> str:
    """Console scripts live beside the interpreter running the tests."""
    return str(Path(sys.executable).parent / name)


class CMProcess(Process):
    def __init__(self, tmp_path: Path, db: Path | None = None, **flags: object) -> None:
        self.db = db or tmp_path / "cm.db"
        self.flags = flags
        argv = [bin_path("tashi-cm"), "--listen", "127.0.0.1:0", "--db", str(self.db)]
        for key, value in flags.items():
            if isinstance(value, bool):
                argv.append(("--" if value else "--no-") + key.replace("_", "-"))
            else:
                argv += ["--" + key.replace("_", "-"), str(value)]
        super().__init__(argv, tmp_path / "cm.log")

    def client(self, user: str = "root") -> ClusterClient:
        return ClusterClient(self.address, user=user)


def start_cm(tmp_path: Path, **flags: object) -> CMProcess:
    return CMProcess(tmp_path, **flags)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = ""):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")
