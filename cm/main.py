"""`tashi-cm`: the cluster manager."""

from __future__ import annotations

import argparse
import logging
import sys

from tashi.cm import tokens
from tashi.cm.cluster import Cluster
from tashi.cm.config import CMConfig
from tashi.cm.dispatch import Dispatcher
from tashi.cm.evacuate import Evacuations
from tashi.cm.metrics import ClusterCollector
from tashi.cm.nodes import LivenessMonitor
from tashi.cm.servicer import ClusterManagerServicer, NodeRegistryServicer, PlacementServicer
from tashi.cm.store import StoreError, open_store
from tashi.runtime import config as rc
from tashi.runtime import server
from tashi.runtime.metrics import ServiceMetrics
from tashi.runtime.tls import Tls, TlsError
from tashi.v1 import cluster_manager_pb2, node_registry_pb2, placement_pb2
from tashi.v1 import cluster_manager_pb2_grpc as cm_grpc
from tashi.v1 import node_registry_pb2_grpc as nr_grpc
from tashi.v1 import placement_pb2_grpc as pl_grpc

log = logging.getLogger("tashi.cm")


class ClusterManager:
    """The cluster manager process: store, state, NM dispatcher, liveness, gRPC server."""

    def __init__(self, cfg: CMConfig) -> None:
        self.cfg = cfg
        self.tls = Tls.from_settings(cfg)
        self.store = open_store(cfg.db, sync=cfg.sync)
        self.cluster = Cluster(cfg, self.store)
        self.dispatcher = Dispatcher(self.cluster, tls=self.tls)
        self.cluster.recover()
        self.liveness = LivenessMonitor(self.cluster)
        self.evacuations = Evacuations(self.cluster)
        self.running: server.Running | None = None
        self.metrics = ServiceMetrics(cfg.metrics_listen)

    def start(self) -> int:
        c = self.cluster
        services = [
            server.Service(cluster_manager_pb2.DESCRIPTOR.services_by_name[
                "ClusterManagerService"].full_name,
                ClusterManagerServicer(c, self.evacuations, self.dispatcher.nms),
                cm_grpc.add_ClusterManagerServiceServicer_to_server),
            server.Service(node_registry_pb2.DESCRIPTOR.services_by_name[
                "NodeRegistryService"].full_name, NodeRegistryServicer(c),
                nr_grpc.add_NodeRegistryServiceServicer_to_server),
            server.Service(placement_pb2.DESCRIPTOR.services_by_name[
                "PlacementService"].full_name, PlacementServicer(c),
                pl_grpc.add_PlacementServiceServicer_to_server),
        ]
        self.metrics.serve(ClusterCollector(c))
        if self.cfg.workers - self.cfg.watch_reserve < 1:
            raise ValueError("--workers must exceed --watch-reserve by at least one")
        self.running = server.start(self.cfg.listen, services, max_workers=self.cfg.workers,
                                    interceptors=self.metrics.interceptors, tls=self.tls,
                                    insecure=self.cfg.insecure, name="tashi-cm",
                                    tokens=lambda token: tokens.resolve(c, token),
                                    token_listen=self.cfg.token_listen)
        running = self.running
        last: list[bool] = [True]

        def writable(ok: bool) -> None:
            if ok != last[0]:  # only on a change: this runs on every commit
                last[0] = ok
                running.set_serving(ok)
                log.warning("store %s: health %s", "writable again" if ok else "cannot write",
                            "SERVING" if ok else "NOT_SERVING")

        c.writable = writable
        self.liveness.start()
        return self.running.port

    def stop(self) -> None:
        self.liveness.stop()
        self.evacuations.stop()
        self.metrics.stop()
        self.cluster.events.close()
        if self.running:
            self.running.stop(grace=1.0)
        self.dispatcher.close()
        self.store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tashi-cm", description="Tashi cluster manager")
    rc.add_config_flags(parser, CMConfig)
    ns = parser.parse_args(argv)
    try:
        cfg = rc.from_args(CMConfig, ns)
    except rc.ConfigError as exc:
        sys.exit(f"tashi-cm: {exc}")
    server.setup_logging(cfg.log_level)
    try:
        cm = ClusterManager(cfg)
        port = cm.start()
    except (OSError, ValueError, TlsError, StoreError) as exc:
        sys.exit(f"tashi-cm: {exc}")
    host = server.split_address(cfg.listen)[0]
    print(f"tashi-cm listening on {host}:{port}", flush=True)
    if cm.running is not None and cm.running.token_port:
        log.info("bearer tokens accepted on %s:%d", server.split_address(cfg.token_listen)[0],
                 cm.running.token_port)
    log.info("store %s, %d hosts, %d instances, last event %d", cfg.db, len(cm.cluster.hosts),
             len(cm.cluster.instances), cm.cluster.events.last_seq)
    server.wait_for_signal(cm.stop)


if __name__ == "__main__":
    main()
