"""What every command gets: the parsed flags, a client, and the output writer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from tashi.cli.render import choose_columns, flatten, render, to_dict
from tashi.runtime.client import ClusterClient


class UsageError(Exception):
    """Bad command-line input, found after argparse (exit 2)."""


@dataclass
class Context:
    args: argparse.Namespace
    show: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)
    _client: ClusterClient | None = None

    def client(self) -> ClusterClient:
        if self._client is None:
            self._client = ClusterClient(self.args.cm, user=self.args.user,
                                         timeout=self.args.timeout)
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
