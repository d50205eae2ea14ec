"""A private PostgreSQL 15 for the tests: Debian's binaries, `initdb` and `pg_ctl`
run by hand as the unprivileged `postgres` user (or as ourselves when not root)
in a scratch directory, listening on loopback only on a free port, trust
authentication for loopback.  One server per test session, a database per
test (created on first use, named after the test's directory).
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


def pg_bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True):
        return candidate
    raise RuntimeError(f"{tool} not found: install postgresql-15")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    def __init__(self, workdir: Path | None = None, fsync: bool = False) -> None:
        """`fsync`: off for the tests (they kill processes, never the machine), on for
        benches that compare with SQLite's durable commits."""
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="tashi-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else getpass.getuser()
        self._run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._admin: psycopg.Connection | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run([pg_bin("initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                   "--no-sync", "-E", "UTF8"])
        self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
                   "-w", "-t", "60", "-o",
                   f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                   f"-c fsync={'on' if fsync else 'off'} -c max_connections=200", "start"])

    def _run(self, argv: list[str]) -> None:
        proc = subprocess.run(self._run_as + argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def database(self, key: str) -> str:
        """The URL of a store of its own for `key` (a schema of the database
        `tashi`, made on first use: much faster than a database per test)."""
        name = "t_" + hashlib.sha1(key.encode()).hexdigest()[:16]
        if self._admin is None:
            with psycopg.connect(self.url(), autocommit=True) as db:
                db.execute("CREATE DATABASE tashi")
            self._admin = psycopg.connect(self.url("tashi"), autocommit=True)
        self._admin.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")  # name: hex digits only
        return self.url("tashi") + f"?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        try:
            self._run([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


_server: PrivatePostgres | None = None


def server() -> PrivatePostgres:
    """The session's PostgreSQL, started on first use (tests/conftest.py stops it)."""
    global _server
    if _server is None:
        _server = PrivatePostgres()
    return _server


def stop_server() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
