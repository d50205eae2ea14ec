"""Cluster manager settings: defaults < TOML (--config) < flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from tashi.runtime.config import data_dir
from tashi.runtime.tls import TransportSettings


def _default_db() -> str:
    return str(data_dir("cm") / "cm.db")


@dataclass
class CMConfig(TransportSettings):
    listen: str = field(default="127.0.0.1:9882", metadata={"help": "HOST:PORT to serve on"})
    token_listen: str = field(default="", metadata={
        "help": "HOST:PORT where users with a bearer token and no certificate connect "
                "(TLS without client certificates; needs --tls-*)"})
    db: str = field(default_factory=_default_db, metadata={
        "help": "the store: a SQLite file, or postgresql://USER@HOST/DB (several CMs, one "
                "leading)"})
    advertise: str = field(default="", metadata={
        "help": "HOST:PORT standbys send clients to while this CM leads (default: --listen)"})
    lease_seconds: float = field(default=5.0, metadata={
        "help": "with PostgreSQL: the leader's lease; a standby takes over this long after "
                "the leader stops renewing it"})
    images: str = field(default="", metadata={"help": "image store directory"})
    admins: list[str] = field(default_factory=lambda: ["root"],
                              metadata={"help": "users allowed admin operations"})
    max_cores: int = field(default=8, metadata={"help": "most cores one instance may have"})
    max_memory: int = field(default=8192, metadata={"help": "most MiB one instance may have"})
    max_count: int = field(default=100_000, metadata={"help": "most instances one createMany"})
    workers: int = field(default=128, metadata={
        "help": "threads serving calls; each open WatchEvents holds one"})
    watch_reserve: int = field(default=32, metadata={
        "help": "threads no watch may take, so unary calls and heartbeats always run; "
                "unary calls are admitted this less 8 at a time (the 8 kept for heartbeats)"})
    watches_per_caller: int = field(default=8, metadata={
        "help": "most WatchEvents streams one user, node or service may hold open"})
    quota_instances: int = field(default=10_000, metadata={
        "help": "most instances one user (not an admin) may hold (0: no limit)"})
    quota_cores: int = field(default=0, metadata={
        "help": "most cores one user's instances may ask for in all (0: no limit)"})
    quota_memory: int = field(default=0, metadata={
        "help": "most MiB one user's instances may ask for in all (0: no limit)"})
    quota_image_bytes: int = field(default=0, metadata={
        "help": "most bytes one user's images may take in the image store, admins exempt "
                "(0: no limit)"})
    image_copy_rate: int = field(default=0, metadata={
        "help": "most bytes per second one image copy or flatten writes (0: no limit)"})
    expire_host_seconds: float = field(default=10.0, metadata={
        "help": "a host not heard from this long is down (stretched with the heartbeat "
                "interval at --heartbeat-rate)"})
    decay_seconds: float = field(default=5.0, metadata={
        "help": "a host not heard from this long (and its instances) shows decayed "
                "(stretched as the expiry is)"})
    heartbeat_rate: float = field(default=200.0, metadata={
        "help": "most heartbeats per second asked of all hosts together: each host is told "
                "to beat no more often than every (hosts / this) s, and the expiry and "
                "decay stretch to five and two and a half of that interval (0: no limit)"})
    migration_seconds: float = field(default=1800.0, metadata={
        "help": "longest a live migration may take before it counts as failed"})
    evacuate_parallel: int = field(default=4, metadata={
        "help": "migrations at a time when evacuating a host (default of evacuateHost)"})
    event_retention: int = field(default=1_000_000, metadata={"help": "events kept for watchers"})
    request_retention_seconds: float = field(
        default=86_400.0, metadata={"help": "how long request_id answers are kept for retries"})
    sync: str = field(default="normal", metadata={
        "help": "normal: durable across a killed CM; full: also across power loss"})
    nm_call_seconds: float = field(default=120.0, metadata={"help": "timeout of calls to NMs"})
    nm_calls: int = field(default=64, metadata={
        "help": "calls to node managers out at once (each holds a thread while it waits; "
                "starts and destroys queue behind them; more threads also compete with "
                "the cluster's own work for the interpreter)"})
    metrics_listen: str = field(default="", metadata={"help": "HOST:PORT for /metrics (off)"})
    data_listen: str = field(default="", metadata={
        "help": "HOST:PORT of the image data port (fast uploads and downloads with a ticket "
                "from OpenImageTransfer; TLS as --listen); default: --listen's host, a free "
                "port; off: none"})
    beat_listen: str = field(default="", metadata={
        "help": "HOST:PORT where a process of its own hears the hosts' heartbeats, so a busy "
                "CM still hears them (TLS as --listen); default: --listen's host, a free "
                "port, once 50 hosts are known; off: the CM hears them itself"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING, ERROR"})
