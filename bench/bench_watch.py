"""WatchEvents fan-out: 100 watchers filtered to their own host against 100 unfiltered,
measured in one run against a real `tashi-cm` on loopback.

100 hosts are registered; in each phase 100 watchers open from the current
seq, then instances are created and activated spread over the hosts (about
two events each).  A phase ends when every watcher has scanned past the
last event; its time runs to the last batch any watcher received.  Figures:
events delivered to the watchers and per second, the time for all watchers
to be told everything they asked for, and the ratios.

    .venv/bin/python bench/bench_watch.py [--per-host 40]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tashi.runtime.client import ClusterClient, EventStream
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb

HOSTS = 100
WATCHERS = 100


def start_cm(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = str(Path(sys.executable).parent / "tashi-cm")
    proc = subprocess.Popen([exe, "--listen", "127.0.0.1:0", "--db", str(tmp / "cm.db"),
                             "--log-level", "WARNING", "--expire-host-seconds", "3600"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    m = re.search(r"listening on (\S+)", proc.stdout.readline().decode())
    if not m:
        proc.kill()
        sys.exit("tashi-cm did not start")
    return proc, m.group(1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def cm_seq(client: ClusterClient) -> int:
    return int(client.call(client.cm.ListHosts, cmpb.ListHostsRequest(page_size=1)).seq)


class Watcher(threading.Thread):
    def __init__(self, client: ClusterClient, since: int, host: str | None) -> None:
        super().__init__(daemon=True)
        self.stream: EventStream = client.watch_events(since, host=host)
        self.events = 0
        self.last_batch = 0.0

    def run(self) -> None:
        for events in self.stream:
            if events:
                self.events += len(events)
                self.last_batch = time.monotonic()

    @property
    def seq(self) -> int:
        return self.stream.seq


def load(client: ClusterClient, hosts: list[pb.Host], per_host: int, tag: str) -> None:
    """Create `per_host` instances per host and activate each on its host, in batches."""
    batch = 100
    total = per_host * len(hosts)
    for start in range(0, total, batch):
        made = client.create_instances(pb.Instance(
            name=f"{tag}-{start}", spec=pb.InstanceSpec(cores=1, memory_mib=64)), count=batch)
        client.activate([pl.Placement(instance_id=inst.id,
                                      host_id=hosts[(start + i) % len(hosts)].id)
                         for i, inst in enumerate(made)])


def phase(clients: list[ClusterClient], root: ClusterClient, hosts: list[pb.Host],
          per_host: int, filtered: bool, cm_pid: int) -> tuple[int, float, float, float]:
    since = cm_seq(root)
    watchers = [Watcher(clients[i % len(clients)], since,
                        hosts[i].name if filtered else None) for i in range(WATCHERS)]
    for w in watchers:
        w.start()
    time.sleep(0.5)  # streams open
    start = time.monotonic()
    cm_cpu, own_cpu = cpu_seconds(cm_pid), time.process_time()
    load(root, hosts, per_host, "f" if filtered else "u")
    target = cm_seq(root)
    deadline = time.monotonic() + 120
    while any(w.seq < target for w in watchers):
        if time.monotonic() > deadline:
            sys.exit("watchers did not catch up in 120 s")
        time.sleep(0.05)
    cm_cpu, own_cpu = cpu_seconds(cm_pid) - cm_cpu, time.process_time() - own_cpu
    for w in watchers:
        w.stream.cancel()
    end = max(w.last_batch for w in watchers)
    return sum(w.events for w in watchers), end - start, cm_cpu, own_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-host", type=int, default=40, help="instances per host per phase")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_cm(Path(tmp))
        try:
            root = ClusterClient(address, timeout=60)
            root.wait_ready()
            for i in range(HOSTS):
                root.create_host(f"h{i:03d}")
                root.call(root.registry.RegisterHost, nr.RegisterHostRequest(
                    name=f"h{i:03d}", cores=1024, memory_mib=1 << 20, version="0.1.0"))
            hosts = sorted(root.list_hosts(), key=lambda h: h.name)
            clients = [ClusterClient(address) for _ in range(10)]
            n = args.per_host * HOSTS
            print(f"{HOSTS} hosts, {n} instances created and activated per phase "
                  f"(~{2 * n} events), {WATCHERS} watchers")
            plain_events, plain_s, plain_cm, plain_own = phase(
                clients, root, hosts, args.per_host, False, proc.pid)
            filt_events, filt_s, filt_cm, filt_own = phase(
                clients, root, hosts, args.per_host, True, proc.pid)
            for c in clients:
                c.close()
            root.close()
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"unfiltered: {plain_events:,} events delivered in {plain_s:.2f} s "
          f"= {plain_events / plain_s:,.0f} events/s ({plain_events / WATCHERS:,.0f} per watcher); "
          f"CPU: CM {plain_cm:.2f} s, watchers+load {plain_own:.2f} s")
    print(f"filtered:   {filt_events:,} events delivered in {filt_s:.2f} s "
          f"= {filt_events / filt_s:,.0f} events/s ({filt_events / WATCHERS:,.0f} per watcher); "
          f"CPU: CM {filt_cm:.2f} s, watchers+load {filt_own:.2f} s")
    print(f"ratio: filtered watchers got {plain_events / max(filt_events, 1):.0f}x fewer events "
          f"and were all told everything they asked for {plain_s / filt_s:.1f}x sooner; "
          f"CM CPU {plain_cm / max(filt_cm, 0.01):.1f}x, "
          f"watcher-side CPU {plain_own / max(filt_own, 0.01):.1f}x less")


if __name__ == "__main__":
    main()
