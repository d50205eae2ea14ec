"""`tashi-cm`: the cluster manager."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import grpc

from tashi.cm import data_port, tokens
from tashi.cm.beats import Beats
from tashi.cm.cluster import Cluster
from tashi.cm.config import CMConfig
from tashi.cm.data_port import DataPort
from tashi.cm.dispatch import Dispatcher
from tashi.cm.evacuate import Evacuations
from tashi.cm.image_transfer import Transfers
from tashi.cm.metrics import ClusterCollector
from tashi.cm.nodes import LivenessMonitor
from tashi.cm.pgstore import LeaseLost
from tashi.cm.servicer import (
    ClusterManagerServicer,
    NodeRegistryServicer,
    PlacementServicer,
    call_slots,
)
from tashi.cm.store import StoreError, open_store
from tashi.runtime import config as rc
from tashi.runtime import server
from tashi.runtime.errors import unavailable
from tashi.runtime.metrics import ServiceMetrics
from tashi.runtime.tls import Tls, TlsError, check_plaintext
from tashi.v1 import cluster_manager_pb2, node_registry_pb2, placement_pb2
from tashi.v1 import cluster_manager_pb2_grpc as cm_grpc
from tashi.v1 import node_registry_pb2_grpc as nr_grpc
from tashi.v1 import placement_pb2_grpc as pl_grpc

log = logging.getLogger("tashi.cm")


SERVICES = (
    (cluster_manager_pb2.DESCRIPTOR.services_by_name["ClusterManagerService"].full_name,
     cm_grpc.add_ClusterManagerServiceServicer_to_server),
    (node_registry_pb2.DESCRIPTOR.services_by_name["NodeRegistryService"].full_name,
     nr_grpc.add_NodeRegistryServiceServicer_to_server),
    (placement_pb2.DESCRIPTOR.services_by_name["PlacementService"].full_name,
     pl_grpc.add_PlacementServiceServicer_to_server),
)


class Standby:
    """Every method of every CM service, answered UNAVAILABLE with the leader's
    address, so a client with several CM addresses goes there."""

    def __init__(self, leader: Callable[[], str]) -> None:
        self._leader = leader

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                where = self._leader()
            except StoreError:  # the database is away: still a standby's answer
                where = ""
            raise unavailable(f"this cluster manager is a standby; the leader is "
                              f"{where or 'being elected'}")
        return refuse


class ClusterManager:
    """The cluster manager process: store, state, NM dispatcher, liveness, gRPC server."""

    def __init__(self, cfg: CMConfig,
                 on_deposed: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.tls = Tls.from_settings(cfg)
        self.store = open_store(cfg.db, sync=cfg.sync, lease_seconds=cfg.lease_seconds)
        self.running: server.Running | None = None
        self.metrics = ServiceMetrics(cfg.metrics_listen)
        self.stopping = threading.Event()
        # A leader that lost its lease must stop at once (the default, for tests:
        # stop serving; `main` exits the process, for its supervisor to restart).
        self.on_deposed = on_deposed or (lambda why: self.stop())
        self._keeper: threading.Thread | None = None
        self.data_port: DataPort | None = None

    @property
    def name(self) -> str:
        """What a standby tells clients: where this CM serves when it leads."""
        return self.cfg.advertise or self.cfg.listen

    def _wait_to_lead(self) -> None:
        """With a shared store, serve as a standby (health NOT_SERVING, every call
        UNAVAILABLE naming the leader) until the lease is ours."""
        store = self.store
        if self._try_lead():
            return
        standby = Standby(store.leader)
        running = server.start(self.cfg.listen, [
            server.Service(svc, standby, add) for svc, add in SERVICES],
            tls=self.tls, insecure=self.cfg.insecure, name="tashi-cm (standby)")
        running.set_serving(False)
        print(f"tashi-cm standby on {self.cfg.listen}; the leader is "
              f"{store.leader() or 'not known yet'}", flush=True)
        try:
            while not self._try_lead():
                if self.stopping.wait(max(0.1, self.cfg.lease_seconds / 10)):
                    raise StoreError("stopped while a standby")
        finally:
            running.stop(grace=0.0)
        log.warning("took the lease: leading now")

    def _try_lead(self) -> bool:
        """A standby outlives the database being away: it keeps trying."""
        try:
            return self.store.try_lead(self.name)
        except StoreError as exc:
            log.warning("could not try for the lease: %s", exc)
            return False

    def _keep_lease(self) -> None:
        while not self.stopping.wait(self.cfg.lease_seconds / 3):
            try:
                self.store.renew()
            except LeaseLost as exc:
                self._deposed(str(exc))
                return
            except StoreError as exc:  # the database is away: the commits fail too
                log.warning("could not renew the lease: %s", exc)

    def _deposed(self, why: str) -> None:
        if self.stopping.is_set():
            return
        log.critical("lost the lease, so this cluster manager stops writing: %s", why)
        self.on_deposed(why)

    def start(self) -> int:
        if self.cfg.nm_calls < 1:
            raise ValueError("--nm-calls must be at least 1")
        if not self.cfg.heartbeat_rate >= 0 or not self.cfg.expire_host_seconds > 0:
            raise ValueError("--heartbeat-rate must be 0 or more and --expire-host-seconds "
                             "more than 0")
        self._wait_to_lead()
        self.cluster = c = Cluster(self.cfg, self.store)
        c.deposed = self._deposed
        self.dispatcher = Dispatcher(c, tls=self.tls)
        c.recover(takeover=self.store.shared)
        if self.cfg.beat_listen != "off":
            c.beats = Beats(self.cfg.beat_listen
                            or f"{server.split_address(self.cfg.listen)[0]}:0",
                            self.tls, self.cfg.insecure, self.cfg.log_level,
                            auto=not self.cfg.beat_listen,
                            lease=self.cfg.lease_seconds if self.store.shared else 0.0)
        self.liveness = LivenessMonitor(c)
        self.evacuations = Evacuations(c)
        if self.store.shared:
            self._keeper = threading.Thread(target=self._keep_lease, name="lease", daemon=True)
            self._keeper.start()
        # One bound on the calls served at once, across the three services.
        calls = call_slots(self.cfg)
        self.registry = NodeRegistryServicer(c, calls)
        servicers = (ClusterManagerServicer(c, self.evacuations, self.dispatcher.nms, calls),
                     self.registry, PlacementServicer(c, calls))
        services = [server.Service(name, servicer, add)
                    for (name, add), servicer in zip(SERVICES, servicers, strict=True)]
        self.metrics.serve(ClusterCollector(c))
        self.data_port = self._data_port(servicers[0].transfers)
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

    def _data_port(self, transfers: Transfers) -> DataPort | None:
        cfg = self.cfg
        if cfg.data_listen == "off":
            return None
        listen = cfg.data_listen or f"{server.split_address(cfg.listen)[0]}:0"
        host = server.split_address(listen)[0]
        if self.tls is None:
            check_plaintext(host, cfg.insecure, "the image data port")
        port = DataPort(transfers, listen, data_port.server_context(cfg.tls_cert, cfg.tls_key)
                        if self.tls is not None else None)
        port.start()
        log.info("image data port on %s:%d", host, port.port)
        return port

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.running is None:  # a standby, or stopped before it led
            return
        self.liveness.stop()
        self.liveness.join(timeout=5)  # no liveness process started after this
        if self.cluster.beats is not None:
            self.cluster.beats.stop()
        self.evacuations.stop()
        self.metrics.stop()
        if self.data_port is not None:
            self.data_port.stop()
        self.cluster.events.close()
        self.running.stop(grace=1.0)
        self.dispatcher.close()
        try:
            self.store.resign()
        except StoreError:
            pass
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
    server.prompt_event_loop()  # heartbeats heard on time while it computes

    def deposed(why: str) -> None:
        # Stop at once, without another write; the supervisor restarts it as a standby.
        os._exit(75)

    try:
        cm = ClusterManager(cfg, on_deposed=deposed)
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
