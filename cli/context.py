"""What every command gets: the parsed flags, a client, and the output writer."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from tashi.cli.render import choose_columns, flatten, render, to_dict
from tashi.runtime.client import ClusterClient
from tashi.runtime.tls import Tls, TlsError


class UsageError(Exception):
    """Bad command-line input, found after argparse (exit 2)."""


def config_dir() -> Path:
    """Where a user keeps `ca.pem`, `cert.pem` and `key.pem` (~/.config/tashi)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tashi"


def credentials(args: argparse.Namespace) -> Tls | None:
    """The user's TLS credentials: flags or TASHI_CA/CERT/KEY, else the three files
    in config_dir() when all exist, else None (plaintext, a loopback cluster)."""
    given = [getattr(args, name, "") or "" for name in ("tls_ca", "tls_cert", "tls_key")]
    if not any(given):
        found = [config_dir() / f"{name}.pem" for name in ("ca", "cert", "key")]
        if not all(p.is_file() for p in found):
            return None
        given = [str(p) for p in found]
    if not all(given):
        raise UsageError("mutual TLS needs all of --tls-ca, --tls-cert and --tls-key")
    try:
        return Tls.load(*given)
    except TlsError as exc:
        raise UsageError(str(exc)) from None


@dataclass
class Context:
    args: argparse.Namespace
    show: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)
    _client: ClusterClient | None = None

    def client(self) -> ClusterClient:
        if self._client is None:
            self._client = ClusterClient(self.args.cm, user=self.args.user,
                                         timeout=self.args.timeout, tls=credentials(self.args))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def err(self, message: str) -> None:
        sys.stderr.write(f"tashi: {message}\n")

    def output(self, items: Sequence[Message | dict[str, Any]], columns: Sequence[str],
               extra: dict[str, Any] | None = None) -> None:
        """Print resources as the chosen format; `columns` are the table's defaults."""
        rows = [to_dict(i) if isinstance(i, Message) else dict(i) for i in items]
        if self.args.output in ("table", "csv"):
            # JSON and YAML keep an instance's spec and status apart.
            rows = [flatten(r) for r in rows]
        for row in rows:
            row.update(extra or {})
        available = list(rows[0]) if rows else list(columns)
        try:
            cols = choose_columns(columns, self.show, self.hide, available)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        text = render(rows, self.args.output, cols)
        if text:
            sys.stdout.write(text + "\n")
