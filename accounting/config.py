"""The accounting service's settings: defaults < TOML (`--config`) < flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from tashi.runtime.config import data_dir
from tashi.runtime.tls import TransportSettings


def _default_db() -> str:
    return str(data_dir("accounting") / "ledger.sqlite")


@dataclass
class AccountingConfig(TransportSettings):
    cm: str = field(default="127.0.0.1:9882", metadata={"help": "cluster manager HOST:PORT"})
    listen: str = field(default="127.0.0.1:9884",
                        metadata={"help": "HOST:PORT to serve AccountingService on"})
    db: str = field(default_factory=_default_db,
                    metadata={"help": "SQLite file of the ledger (created if missing)"})
    user: str = field(default="root", metadata={"help": "user name to call the CM as (an admin)"})
    reconcile_seconds: float = field(default=600.0, metadata={
        "help": "seconds between reconciles against ListInstances (0: never)"})
    watch_batch: int = field(default=1000, metadata={"help": "events per WatchEvents message"})
    commit_events: int = field(default=10_000, metadata={
        "help": "most events in one transaction (messages queued up are merged)"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING, ERROR"})
    metrics_listen: str = field(default="", metadata={
        "help": "HOST:PORT to serve Prometheus /metrics on (off when empty)"})
