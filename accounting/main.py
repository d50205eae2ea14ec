"""`tashi-accounting`: follow the cluster manager's events into a durable usage ledger."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tashi.accounting.admins import CmAdmins
from tashi.accounting.config import AccountingConfig
from tashi.accounting.follower import Follower, Reconciler
from tashi.accounting.metrics import AccountingCollector, CountingLedger
from tashi.accounting.service import AccountingServicer
from tashi.runtime import server
from tashi.runtime.config import ConfigError, add_config_flags, from_args
from tashi.runtime.metrics import ServiceMetrics
from tashi.runtime.tls import Tls, TlsError
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import accounting_pb2_grpc as apb_grpc

log = logging.getLogger("tashi.accounting")

SERVICE_NAME = apb.DESCRIPTOR.services_by_name["AccountingService"].full_name


def parse(argv: list[str] | None) -> AccountingConfig:
    parser = argparse.ArgumentParser(prog="tashi-accounting", description=__doc__)
    add_config_flags(parser, AccountingConfig)
    ns = parser.parse_args(argv)
    try:
        return from_args(AccountingConfig, ns)
    except ConfigError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> None:
    cfg = parse(argv)
    server.setup_logging(cfg.log_level)
    Path(cfg.db).parent.mkdir(parents=True, exist_ok=True)
    try:
        tls = Tls.from_settings(cfg)
    except TlsError as exc:
        sys.exit(f"tashi-accounting: {exc}")
    ledger = CountingLedger(cfg.db)
    log.info("ledger %s at seq %d", cfg.db, ledger.seq)
    follower = Follower(ledger, cfg.cm, cfg.user, batch=cfg.watch_batch,
                        commit_events=cfg.commit_events, tls=tls)
    try:
        metrics = ServiceMetrics(cfg.metrics_listen)
        metrics.serve(AccountingCollector(ledger, cfg.cm, cfg.user, tls=tls,
                                          informer=follower.informer))
    except (OSError, ValueError) as exc:
        sys.exit(f"tashi-accounting: {exc}")
    try:
        running = server.start(cfg.listen, [server.Service(
            SERVICE_NAME, AccountingServicer(ledger, CmAdmins(cfg.cm, cfg.user, tls)),
            apb_grpc.add_AccountingServiceServicer_to_server)],
            interceptors=metrics.interceptors, tls=tls, insecure=cfg.insecure,
            name="tashi-accounting")
    except (OSError, RuntimeError, ValueError, TlsError) as exc:
        sys.exit(f"tashi-accounting: cannot listen on {cfg.listen}: {exc}")
    host, _port = server.split_address(cfg.listen)
    print(f"tashi-accounting listening on {host}:{running.port}", flush=True)
    reconciler = Reconciler(ledger, cfg.cm, cfg.user, cfg.reconcile_seconds, tls=tls)
    follower.start()
    reconciler.start()

    def stop() -> None:
        follower.stop()
        reconciler.stop()
        running.stop()
        metrics.stop()
        ledger.close()

    server.wait_for_signal(stop)


if __name__ == "__main__":
    main()
