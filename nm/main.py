"""`tashi-nm`: the node manager of one VM host."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# pyroute2 forks a helper to open netlink sockets in another network namespace;
# with gRPC's fork handlers on, a fork while a gRPC stream is busy crashed that
# helper (SIGSEGV) about every other start.  The helper never uses gRPC, so the
# handlers are not needed.  Read once when grpc is first imported: set it first.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from tashi.nm import metrics  # noqa: E402
from tashi.nm.config import NmConfig  # noqa: E402
from tashi.nm.errors import NmError  # noqa: E402
from tashi.nm.node import NodeManager  # noqa: E402
from tashi.runtime import config as rc  # noqa: E402
from tashi.runtime import server  # noqa: E402
from tashi.runtime.tls import TlsError  # noqa: E402

log = logging.getLogger("tashi.nm")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tashi-nm", description="Tashi node manager")
    rc.add_config_flags(parser, NmConfig)
    ns = parser.parse_args(argv)
    try:
        cfg = rc.from_args(NmConfig, ns)
    except rc.ConfigError as exc:
        sys.exit(f"tashi-nm: {exc}")
    if cfg.domain_type not in ("qemu", "kvm", "test"):
        sys.exit(f"tashi-nm: --domain-type must be qemu or kvm, got {cfg.domain_type!r}")
    if cfg.heartbeat_seconds <= 0 or cfg.reserved_memory < 0:
        sys.exit("tashi-nm: --heartbeat-seconds must be positive and --reserved-memory "
                 "not negative")
    server.setup_logging(cfg.log_level)
    try:
        node = NodeManager(cfg)
        metrics.serve(node)
        port = node.start()
    except NmError as exc:
        sys.exit(f"tashi-nm: {exc.message}")
    except (OSError, ValueError, TlsError) as exc:
        sys.exit(f"tashi-nm: {exc}")
    host = server.split_address(cfg.listen)[0]
    print(f"tashi-nm listening on {host}:{port}", flush=True)
    facts = node.driver.host_facts()
    log.info("host %s: %d cores, %d MiB (%d reserved), %s; %d VMs adopted", cfg.hostname,
             facts.cores, facts.memory_mib, cfg.reserved_memory, facts.hypervisor,
             len(node.driver.list_vms()))
    server.wait_for_signal(node.stop)


if __name__ == "__main__":
    main()
