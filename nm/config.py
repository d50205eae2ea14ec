"""The node manager's settings: defaults < TOML (`--config`) < flags."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from tashi.runtime.config import data_dir
from tashi.runtime.tls import TransportSettings


def _default_state_dir() -> str:
    return str(data_dir("nm"))


@dataclass
class NmConfig(TransportSettings):
    listen: str = field(default="127.0.0.1:9883",
                        metadata={"help": "HOST:PORT to serve NodeManagerService on"})
    cm: str = field(default="127.0.0.1:9882", metadata={"help": "cluster manager HOST:PORT"})
    hostname: str = field(default_factory=socket.gethostname,
                          metadata={"help": "name the host was added under (tashi addHost)"})
    advertise: str = field(default="", metadata={
        "help": "HOST:PORT the CM reaches this NM at (default: the listen address)"})
    migration_uri: str = field(default="", metadata={
        "help": "libvirt URI other hosts' hypervisors reach this one at for live migration "
                "(default: qemu+tls://ADVERTISED-HOST/system with TLS, else qemu+tcp://...)"})
    libvirt_uri: str = field(default="qemu:///system", metadata={
        "help": "libvirt URI; test:///path/node.xml simulates a host of that size"})
    images: str = field(default="/var/lib/tashi/images",
                        metadata={"help": "image store (disk URIs are relative to it)"})
    state_dir: str = field(default_factory=_default_state_dir,
                           metadata={"help": "suspend files, overlays, console logs"})
    cpu_ratio: float = field(default=1.0, metadata={
        "help": "vCPUs the host may commit per core (like Nova's cpu_allocation_ratio)"})
    reserved_memory: int = field(default=512,
                                 metadata={"help": "MiB kept for the host itself"})
    heartbeat_seconds: float = field(default=2.0,
                                     metadata={"help": "seconds between heartbeats"})
    resync_seconds: float = field(default=60.0, metadata={
        "help": "seconds between safety-net resyncs with libvirt"})
    answered_report_seconds: float = field(default=30.0, metadata={
        "help": "seconds the report of a VM a start call ran may wait to go with other "
                "news, since the call's answer tells the cluster manager (0: at once)"})
    domain_type: str = field(default="qemu",
                             metadata={"help": "libvirt domain type: qemu (TCG) or kvm"})
    user: str = field(default="root", metadata={"help": "user name the NM calls the CM as"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING, ERROR"})
    uplink: str = field(default="", metadata={
        "help": "interface the networks ride on (VLAN parent, VXLAN underlay, flat bridge "
                "port); empty: host networking is left alone"})
    network_namespace: str = field(default="", metadata={
        "help": "network namespace holding the uplink and the networks' links: a name "
                "under /run/netns or a path such as /proc/PID/ns/net (tests)"})
    metrics_listen: str = field(default="", metadata={
        "help": "HOST:PORT to serve Prometheus /metrics on (off when empty)"})
