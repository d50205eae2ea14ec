"""What mutual TLS costs: CreateInstance calls/s and WatchEvents events/s against
a `tashi-cm` with mutual TLS beside one in plaintext, measured in one run.

    python bench/bench_tls.py [--calls 2000] [--rounds 3]

Both cluster managers run as real processes on loopback with their own
stores; one client thread creates instances one call at a time (a new
connection's handshake is not counted: the channel is reused, as every
Tashi client does), then a watcher replays every event from seq 0.  Rounds
alternate between the two so that machine noise falls on both.
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

from tashi.runtime.certs import create_ca, issue
from tashi.runtime.client import ClusterClient
from tashi.runtime.tls import Tls
from tashi.v1 import resources_pb2 as pb

BIN = Path(sys.executable).parent


def start_cm(work: Path, tls_flags: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(BIN / "tashi-cm"), "--listen", "127.0.0.1:0", "--db",
                             str(work / "cm.db"), "--max-count", "100000", *tls_flags],
                            stdout=subprocess.PIPE, stderr=open(work / "cm.log", "wb"))
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"tashi-cm did not start: see {work / 'cm.log'}")
    return proc, m.group(1)


def creates_per_second(client: ClusterClient, calls: int, tag: str) -> float:
    spec = pb.InstanceSpec(cores=1, memory_mib=64)
    t0 = time.perf_counter()
    for i in range(calls):
        client.create_instances(pb.Instance(name=f"{tag}-{i}", spec=spec))
    return calls / (time.perf_counter() - t0)


def events_per_second(client: ClusterClient, until: int) -> float:
    got = 0
    t0 = time.perf_counter()
    with client.watch_events(0, max_batch=1000) as stream:
        while stream.seq < until:
            got += len(next(stream))
    return got / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000, help="CreateInstance calls per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tashi-bench-tls-") as tmp:
        work = Path(tmp)
        ca = work / "ca"
        create_ca(ca)
        cm_cert, cm_key = issue(ca, "service", "tashi-cm")
        root_cert, root_key = issue(ca, "user", "root")
        tls = Tls.load(ca / "ca.pem", root_cert, root_key)
        flags = ["--tls-ca", str(ca / "ca.pem"), "--tls-cert", str(cm_cert),
                 "--tls-key", str(cm_key)]
        procs = {"plaintext": start_cm(work / "plain", []), "mutual TLS": start_cm(work / "tls",
                                                                                   flags)}
        clients = {"plaintext": ClusterClient(procs["plaintext"][1], timeout=30),
                   "mutual TLS": ClusterClient(procs["mutual TLS"][1], timeout=30, tls=tls)}
        creates: dict[str, list[float]] = {k: [] for k in clients}
        events: dict[str, list[float]] = {k: [] for k in clients}
        try:
            for client in clients.values():  # connect (and handshake) before timing
                client.list_networks()
            for r in range(args.rounds):
                for mode, client in clients.items():
                    creates[mode].append(creates_per_second(client, args.calls, f"r{r}"))
                    top = client.list_instances_at()[2]
                    events[mode].append(events_per_second(client, top))
        finally:
            for client in clients.values():
                client.close()
            for proc, _address in procs.values():
                proc.terminate()
                proc.wait(10)
                if proc.stdout:
                    proc.stdout.close()
        print(f"{args.rounds} rounds, {args.calls} CreateInstance calls each, one client "
              "thread; then a watcher replays every event from 0 (median of rounds)")
        for mode in clients:
            print(f"  {mode:<11} CreateInstance {statistics.median(creates[mode]):8,.0f} calls/s"
                  f"   WatchEvents {statistics.median(events[mode]):10,.0f} events/s")
        c = statistics.median(creates["mutual TLS"]) / statistics.median(creates["plaintext"])
        e = statistics.median(events["mutual TLS"]) / statistics.median(events["plaintext"])
        print(f"  mutual TLS / plaintext: CreateInstance {c:.2f}x ({(1 - c) * 100:+.0f}% cost), "
              f"WatchEvents {e:.2f}x ({(1 - e) * 100:+.0f}% cost)")


if __name__ == "__main__":
    main()
