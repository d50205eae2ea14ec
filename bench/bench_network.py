"""Host network convergence figures, measured in one run (root; namespaces only).

    python bench/bench_network.py [--networks 100]

In a scratch network namespace with a veth uplink, converge --networks VXLAN
networks (MTU 9000, two peers each) with `tashi.nm.network.HostNetworking`:

1. First pass (builds everything), beside the same links made by `ip` and
   `bridge` commands (one process per command, as a shell script would) as a
   ratio.
2. A no-op pass (everything already right; median of 5): what the NM's
   periodic resync costs, per network and as a ratio of the first pass.
3. Repair pass after deleting every tenth VXLAN device by hand.

Only the namespace it creates is touched; it is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from tashi.nm.network import HostNetworking, Kind, NetworkSpec


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


def by_commands(ns: str, count: int) -> float:
    """The same links by `ip`/`bridge` processes, in a namespace of their own."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    ip(ns, "link", "add", "up0", "type", "veth", "peer", "name", "wire0")
    ip(ns, "link", "set", "up0", "mtu", "9050", "up")
    start = time.perf_counter()
    for i in range(1, count + 1):
        ip(ns, "link", "add", f"cvx{i}", "type", "vxlan", "id", str(10000 + i), "dstport",
           "4789", "dev", "up0")
        for peer in ("192.0.2.2", "192.0.2.3"):
            subprocess.run(["ip", "netns", "exec", ns, "bridge", "fdb", "append",
                            "00:00:00:00:00:00", "dev", f"cvx{i}", "dst", peer],
                           check=True, capture_output=True)
        ip(ns, "link", "add", f"cbr{i}", "type", "bridge", "forward_delay", "0",
           "hello_time", "100", "stp_state", "0")
        ip(ns, "link", "set", f"cbr{i}", "mtu", "9000", "up")
        ip(ns, "link", "set", f"cvx{i}", "mtu", "9000", "master", f"cbr{i}", "up")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=100)
    args = parser.parse_args()
    n = args.networks
    ns = f"tashi-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip(ns, "link", "add", "up0", "type", "veth", "peer", "name", "wire0")
        ip(ns, "addr", "add", "192.0.2.1/24", "dev", "up0")
        ip(ns, "link", "set", "up0", "mtu", "9050", "up")
        specs = [NetworkSpec(i, f"net{i}", Kind.VXLAN, mtu=9000, vni=i,
                             peers=("192.0.2.2", "192.0.2.3")) for i in range(1, n + 1)]
        net = HostNetworking("up0", ns)

        t0 = time.perf_counter()
        first = net.converge(specs)
        t_first = time.perf_counter() - t0
        assert all(s.ready for s in first.statuses)
        try:
            t_cmds = by_commands(ns + "-ip", n)
        finally:
            subprocess.run(["ip", "netns", "del", ns + "-ip"], capture_output=True)

        noops = []
        for _ in range(5):
            t0 = time.perf_counter()
            noop = net.converge(specs)
            noops.append(time.perf_counter() - t0)
            assert noop.changes == ()
        t_noop = statistics.median(noops)

        for i in range(1, n + 1, 10):
            ip(ns, "link", "del", f"tvx{i}")
        t0 = time.perf_counter()
        repair = net.converge(specs)
        t_repair = time.perf_counter() - t0
        assert all(s.ready for s in repair.statuses)

        print(f"networks: {n} VXLAN (bridge + device + 2 peers + MTU 9000 each)")
        print(f"first pass:   {t_first * 1000:8.1f} ms  ({t_first / n * 1000:.2f} ms/network, "
              f"{len(first.changes)} changes)")
        print(f"ip commands:  {t_cmds * 1000:8.1f} ms  (same links; ratio pass/commands "
              f"{t_first / t_cmds:.2f})")
        print(f"no-op pass:   {t_noop * 1000:8.1f} ms  (median of 5; "
              f"{t_noop / n * 1000:.2f} ms/network; ratio no-op/first {t_noop / t_first:.2f})")
        print(f"repair pass:  {t_repair * 1000:8.1f} ms  ({len(repair.changes)} changes after "
              f"deleting {len(range(1, n + 1, 10))} devices)")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    main()
