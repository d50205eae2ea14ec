"""The node manager process: driver, gRPC server and reporter wired together."""

from __future__ import annotations

import logging
import socket

from tashi.nm.answering import Answering
from tashi.nm.config import NmConfig
from tashi.nm.driver import Driver
from tashi.nm.libvirt.driver import LibvirtDriver
from tashi.nm.network.agent import HostNetworkAgent
from tashi.nm.plumbing import BridgeLookup
from tashi.nm.reporter import NetworkStatus, ReportClock, Reporter
from tashi.nm.servicer import NodeManagerServicer
from tashi.runtime import server
from tashi.runtime.client import ClusterClient
from tashi.runtime.metrics import ServiceMetrics
from tashi.runtime.tls import Tls
from tashi.v1 import node_manager_pb2
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger("tashi.nm")

SERVICE_NAME = node_manager_pb2.DESCRIPTOR.services_by_name["NodeManagerService"].full_name


def advertised_address(cfg: NmConfig, port: int) -> str:
    """Where the CM should call us: --advertise, else the listen host (the machine's
    name when listening on every address) with the port really bound."""
    if cfg.advertise:
        return cfg.advertise
    host = server.split_address(cfg.listen)[0]
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def migration_uri(cfg: NmConfig, advertised: str, tls: bool) -> str:
    """--migration-uri, else libvirt's TLS (with TLS on) or TCP transport on the
    advertised host."""
    if cfg.migration_uri:
        return cfg.migration_uri
    host = server.split_address(advertised)[0]
    host = f"[{host}]" if ":" in host else host
    return f"{'qemu+tls' if tls else 'qemu+tcp'}://{host}/system"


class NodeManager:
    def __init__(self, cfg: NmConfig, driver: Driver | None = None, *,
                 bridge_lookup: BridgeLookup | None = None,
                 network_status: NetworkStatus | None = None,
                 server_workers: int = 32) -> None:
        self.cfg = cfg
        # Threads serving NodeManagerService (created as calls arrive, kept): a fleet
        # of simulated hosts in one process keeps this small.
        self.server_workers = server_workers
        self.tls = Tls.from_settings(cfg)
        self.driver = driver or LibvirtDriver(
            cfg.libvirt_uri, cfg.images, cfg.state_dir, domain_type=cfg.domain_type,
            reserved_memory_mib=cfg.reserved_memory, cpu_ratio=cfg.cpu_ratio)
        self.client = ClusterClient(cfg.cm, user=cfg.user, timeout=30.0, tls=self.tls)
        self.networks: HostNetworkAgent | None = None
        if cfg.uplink:
            self.networks = HostNetworkAgent(
                self.client, self.driver, cfg.uplink, netns=cfg.network_namespace or None,
                resync_seconds=cfg.resync_seconds, host=cfg.hostname)
            bridge_lookup = bridge_lookup or self.networks.bridge_for
            network_status = network_status or self.networks.statuses
        self.clock = ReportClock()  # numbers the reports and the answers of starts
        self.answering = Answering()  # starts whose answers tell the CM what they ran
        self.servicer = NodeManagerServicer(self.driver, bridge_lookup, stamp=self.clock.next,
                                            answering=self.answering)
        self.network_status = network_status
        self.running: server.Running | None = None
        self.reporter: Reporter | None = None
        self.metrics = ServiceMetrics(cfg.metrics_listen)

    def start(self) -> int:
        self.running = server.start(self.cfg.listen, [
            server.Service(SERVICE_NAME, self.servicer,
                           nm_grpc.add_NodeManagerServiceServicer_to_server)],
            max_workers=self.server_workers, interceptors=self.metrics.interceptors,
            tls=self.tls, insecure=self.cfg.insecure,
            name="tashi-nm")
        advertised = advertised_address(self.cfg, self.running.port)
        facts = self.driver.host_facts()
        capabilities = pb.HostCapabilities(
            migration_uri=migration_uri(self.cfg, advertised, self.tls is not None),
            live_migration=facts.live_migration, reason=facts.no_migration_reason)
        self.reporter = Reporter(
            self.driver, self.client, self.cfg.hostname, advertised,
            capabilities=capabilities,
            reserved_memory_mib=self.cfg.reserved_memory,
            heartbeat_seconds=self.cfg.heartbeat_seconds,
            resync_seconds=self.cfg.resync_seconds, network_status=self.network_status,
            clock=self.clock, answering=self.answering,
            answered_hold_seconds=self.cfg.answered_report_seconds)
        if self.networks is not None:  # first pass before registering, bounded
            self.networks.start(self.reporter.observe)
        self.reporter.start()
        return self.running.port

    def stop(self) -> None:
        """Stop serving and reporting; the VMs keep running (a later NM re-adopts them)."""
        if self.reporter is not None:
            self.reporter.stop()
        if self.networks is not None:
            self.networks.stop()
        self.metrics.stop()
        if self.running is not None:
            self.running.stop(grace=1.0)
        self.client.close()
        self.driver.close()
