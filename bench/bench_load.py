"""Listers against writers: does reading a big cluster slow down creates and
heartbeats?  One run against a real `tashi-cm` on loopback.

    python bench/bench_load.py [--instances 20000] [--listers 200] [--seconds 30]

Fills the CM with `--instances` instances on 100 synthetic hosts, then
measures, first idle and then while `--listers` clients (in 4 processes)
list every instance over and over: the latency of one CreateInstance at a
time (about 20 a second) and of a host's Heartbeat (every 0.5 s).  Prints
p50/p99/max of each, both ways, and the listings completed per second.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tashi.runtime.client import ClusterClient
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import resources_pb2 as pb

BIN = Path(sys.executable).parent


def lister(address: str, threads: int, stop_at: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    done = [0]
    lock = threading.Lock()

    def run() -> None:
        client = ClusterClient(address, timeout=120)
        while time.monotonic() < stop_at:
            client.list_instances()
            with lock:
                done[0] += 1
        client.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(done[0])


def measure(address: str, seconds: float, tag: str) -> tuple[list[float], list[float]]:
    """Create latencies (one at a time, ~20/s) and heartbeat latencies (every 0.5 s)."""
    creates: list[float] = []
    beats: list[float] = []
    stop = time.monotonic() + seconds

    def create() -> None:
        client = ClusterClient(address, timeout=120)
        spec = pb.InstanceSpec(cores=1, memory_mib=64)
        i = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            client.create_instances(pb.Instance(name=f"{tag}-{i}", spec=spec))
            creates.append(time.perf_counter() - t0)
            i += 1
            time.sleep(max(0.0, 0.05 - (time.perf_counter() - t0)))
        client.close()

    def beat() -> None:
        client = ClusterClient(address, timeout=120)
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            client.call(client.registry.Heartbeat, nr.HeartbeatRequest(name="h000"))
            beats.append(time.perf_counter() - t0)
            time.sleep(max(0.0, 0.5 - (time.perf_counter() - t0)))
        client.close()

    threads = [threading.Thread(target=create), threading.Thread(target=beat)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return creates, beats


def figures(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (f"p50 {statistics.median(ms):7.1f} ms  p99 {p99:7.1f} ms  max {ms[-1]:7.1f} ms  "
            f"(n={len(ms)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=20_000)
    ap.add_argument("--listers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tashi-bench-load-") as tmp:
        work = Path(tmp)
        proc = subprocess.Popen(
            [str(BIN / "tashi-cm"), "--listen", "127.0.0.1:0", "--db", str(work / "cm.db"),
             "--expire-host-seconds", "3600", "--quota-instances", "0",
             "--log-level", "WARNING"], stdout=subprocess.PIPE,
            stderr=open(work / "cm.log", "wb"))
        assert proc.stdout is not None
        m = re.search(r"listening on (\S+)", proc.stdout.readline().decode())
        if not m:
            sys.exit(f"tashi-cm did not start: see {work / 'cm.log'}")
        address = m.group(1)
        try:
            root = ClusterClient(address, timeout=120)
            for i in range(100):
                root.create_host(f"h{i:03d}")
                root.call(root.registry.RegisterHost, nr.RegisterHostRequest(
                    name=f"h{i:03d}", cores=1024, memory_mib=1 << 22, version="0.1.0"))
            spec = pb.InstanceSpec(cores=1, memory_mib=64, hints={"densePack": "True"})
            for start in range(0, args.instances, 1000):
                root.create_instances(pb.Instance(name=f"fill-{start}", spec=spec),
                                      count=min(1000, args.instances - start))
            root.close()
            idle_creates, idle_beats = measure(address, min(10.0, args.seconds), "idle")
            stop_at = time.monotonic() + args.seconds
            queue: mp.Queue[int] = mp.Queue()
            per = args.listers // 4
            procs = [mp.Process(target=lister, args=(address, per, stop_at, queue))
                     for _ in range(4)]
            for p in procs:
                p.start()
            time.sleep(2.0)  # the listers are under way
            busy_creates, busy_beats = measure(address, args.seconds - 2.0, "busy")
            listings = sum(queue.get() for _ in procs)
            for p in procs:
                p.join()
        finally:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()
    print(f"{args.instances:,} instances on 100 hosts; {per * 4} listers in 4 processes for "
          f"{args.seconds:.0f} s")
    print(f"  idle   CreateInstance {figures(idle_creates)}")
    print(f"  idle   Heartbeat      {figures(idle_beats)}")
    print(f"  listed CreateInstance {figures(busy_creates)}")
    print(f"  listed Heartbeat      {figures(busy_beats)}")
    print(f"  full listings of {args.instances:,} instances completed: {listings} "
          f"({listings / args.seconds:.1f}/s)")


if __name__ == "__main__":
    main()
