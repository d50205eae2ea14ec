"""`tashi-scheduler`: the placement agent as a process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from tashi.runtime.client import ClusterClient
from tashi.runtime.config import ConfigError, add_config_flags, from_args
from tashi.runtime.server import setup_logging
from tashi.runtime.tls import Tls, TlsError
from tashi.scheduler import metrics
from tashi.scheduler.agent import Agent
from tashi.scheduler.config import SchedulerConfig
from tashi.scheduler.model import Policy

log = logging.getLogger("tashi.scheduler")


def parse_config(argv: list[str] | None = None) -> SchedulerConfig:
    parser = argparse.ArgumentParser(
        prog="tashi-scheduler",
        description="Places pending Tashi VMs on hosts, driven by the cluster manager's events.")
    add_config_flags(parser, SchedulerConfig)
    args = parser.parse_args(argv)
    try:
        config = from_args(SchedulerConfig, args)
    except ConfigError as exc:
        parser.error(str(exc))
    if config.policy not in {p.value for p in Policy}:
        parser.error(f"policy must be spread or densePack, not {config.policy!r}")
    if config.batch_size < 1 or config.resync_seconds <= 0 or config.max_refusals < 1:
        parser.error("batch-size and max-refusals must be at least 1, resync-seconds above 0")
    return config


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    setup_logging(config.log_level)
    try:
        tls = Tls.from_settings(config)
    except TlsError as exc:
        sys.exit(f"tashi-scheduler: {exc}")
    client = ClusterClient(config.cm, user=config.user, tls=tls)

    announced = threading.Event()

    def connected() -> None:
        if not announced.is_set():
            announced.set()
            print(f"tashi-scheduler connected to {config.cm}", flush=True)
        else:
            log.info("connected to %s again", config.cm)

    agent = Agent(client, config, on_connected=connected)
    try:
        served = metrics.serve(agent, config.metrics_listen)
    except (OSError, ValueError) as exc:
        sys.exit(f"tashi-scheduler: {exc}")

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker = threading.Thread(target=agent.run, name="agent", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    served.stop()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
