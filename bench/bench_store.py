"""The PostgreSQL store beside SQLite, and CM failover, measured in one run.

    python -m bench.bench_store [--creates 2000] [--batch 500] [--batches 10] [--takeovers 10]

Prints, for a real `tashi-cm` on each store (PostgreSQL: a private server from
tests/pg.py, on loopback, fsync on):
- single creates/s (one CreateInstance per call, one client),
- batched creates/s (createMany in batches),
and the ratios PostgreSQL / SQLite; then the takeover time over N takeovers
with two CMs on one database: the leader SIGKILLed -> the first write the new
leader accepts (a client given both addresses retries until then), p50 and max,
with the lease at its default (5 s) and at 1 s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tashi.runtime.client import ClusterClient
from tashi.v1 import resources_pb2 as pb
from tests import pg
from tests.harness import free_port

READY = re.compile(r"(listening on|standby on) (\S+)")


def start_cm(db: str, port: int, lease: float) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).parent / "tashi-cm")
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "--listen", address, "--advertise", address, "--db", db,
                             "--lease-seconds", str(lease), "--log-level", "ERROR"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not READY.search(line):
        proc.kill()
        sys.exit(f"tashi-cm did not start: {line!r}")
    return proc


def small(name: str) -> pb.Instance:
    return pb.Instance(name=name, spec=pb.InstanceSpec(cores=1, memory_mib=64))


def creates(db: str, n: int, batch: int, batches: int) -> tuple[float, float]:
    port = free_port()
    proc = start_cm(db, port, 5.0)
    try:
        client = ClusterClient(f"127.0.0.1:{port}", timeout=120)
        t0 = time.perf_counter()
        for i in range(n):
            client.create_instances(small(f"s{i}"))
        single = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in range(batches):
            client.create_instances(small(f"b{b}"), count=batch)
        batched = batch * batches / (time.perf_counter() - t0)
        client.close()
        return single, batched
    finally:
        proc.kill()
        proc.wait()


def takeovers(db: str, rounds: int, lease: float) -> list[float]:
    ports = [free_port(), free_port()]
    procs = [start_cm(db, p, lease) for p in ports]
    client = ClusterClient(",".join(f"127.0.0.1:{p}" for p in ports), timeout=60)
    times = []
    try:
        client.create_instances(small("warm"))
        for r in range(rounds):
            leader = next(i for i, p in enumerate(procs) if p.poll() is None
                          and client.address.endswith(f":{ports[i]}"))
            time.sleep(lease / 3 + 0.2)  # mid-lease, as a crash would find it
            procs[leader].kill()
            procs[leader].wait()
            t0 = time.perf_counter()
            client.create_instances(small(f"t{r}"), request_id=f"takeover-{lease}-{r}")
            times.append(time.perf_counter() - t0)
            procs[leader] = start_cm(db, ports[leader], lease)  # back as the standby
    finally:
        client.close()
        for p in procs:
            p.kill()
            p.wait()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--creates", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--takeovers", type=int, default=10)
    ns = ap.parse_args()
    server = pg.PrivatePostgres(fsync=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sq = creates(str(Path(tmp) / "cm.db"), ns.creates, ns.batch, ns.batches)
        pq = creates(server.database("creates"), ns.creates, ns.batch, ns.batches)
        print(f"{'store':<12}{'single creates/s':>18}{'batched creates/s':>20}")
        print(f"{'SQLite':<12}{sq[0]:>18.0f}{sq[1]:>20.0f}")
        print(f"{'PostgreSQL':<12}{pq[0]:>18.0f}{pq[1]:>20.0f}")
        print(f"PostgreSQL / SQLite: single {pq[0] / sq[0]:.2f}, batched {pq[1] / sq[1]:.2f}")
        for lease in (5.0, 1.0):
            t = takeovers(server.database(f"takeover-{lease}"), ns.takeovers, lease)
            print(f"takeover (leader killed -> first write accepted), lease {lease:g} s, "
                  f"{len(t)} takeovers: p50 {statistics.median(t):.2f} s, max {max(t):.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
