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


def bearer_token(args: argparse.Namespace) -> str:
    """--token, else TASHI_TOKEN, else ~/.config/tashi/token, else none."""
    token = getattr(args, "token", "") or ""
    if not token:
        path = config_dir() / "token"
        if path.is_file():
            token = path.read_text().strip()
    return token


def credentials(args: argparse.Namespace) -> Tls | None:
    """The user's TLS credentials: flags or TASHI_CA/CERT/KEY, else the three files
    in config_dir() when all exist, else None (plaintext, a loopback cluster)."""
    given = [getattr(args, name, "") or "" for name in ("tls_ca", "tls_cert", "tls_key")]
    if bearer_token(args) and not given[1] and not given[2]:
        # A token instead of a certificate: TLS that checks the server only.
        ca = given[0] or str(config_dir() / "ca.pem")
        if not given[0] and not Path(ca).is_file():
            return None  # plaintext: a loopback cluster in development mode
        try:
            return Tls.ca_only(ca)
        except TlsError as exc:
            raise UsageError(str(exc)) from None
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
                                         timeout=self.args.timeout, tls=credentials(self.args),
                                         token=bearer_token(self.args))
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
