"""The scheduler's settings: defaults < TOML file (`--config`) < flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from tashi.runtime.client import DEFAULT_CM
from tashi.runtime.tls import TransportSettings


@dataclass
class SchedulerConfig(TransportSettings):
    cm: str = field(default=DEFAULT_CM, metadata={"help": "cluster manager HOST:PORT"})
    user: str = field(default="root", metadata={"help": "user to act as (an admin)"})
    policy: str = field(default="spread", metadata={
        "help": "default policy: spread (fewest VMs) or densePack (best fit: least free room)"})
    resync_seconds: float = field(default=600.0, metadata={
        "help": "relist everything this often, as a safety net beside the event stream"})
    batch_size: int = field(default=1000, metadata={
        "help": "placements per ActivateInstances call"})
    max_refusals: int = field(default=5, metadata={
        "help": "proposals the CM may refuse in a row before the VM is held"})
    start_failure_backoff_seconds: float = field(default=30.0, metadata={
        "help": "after a failed start, keep the VM off that host this long (doubling)"})
    ip_allocator: bool = field(default=True, metadata={
        "help": "give NICs addresses from their network's cidr"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING ..."})
    metrics_listen: str = field(default="", metadata={
        "help": "HOST:PORT to serve Prometheus /metrics on (off when empty)"})
