"""Scrape time of one node manager's /metrics with 100 and 1,000 VMs, measured in one run.

    python bench/bench_metrics.py [--counts 100,1000] [--scrapes 20]

Starts a real `tashi-nm` on libvirt's test driver (a simulated host big enough
for every VM), starts the VMs through its gRPC StartVm (one disk and one NIC
each, as the CM would ask), then scrapes http://.../metrics over loopback and
prints, per VM count: the median and 90th-percentile scrape time, the libvirt
read inside it (tashi_nm_libvirt_read_duration_seconds), the body size and the
series count; then the per-VM cost and the 1,000/100 time ratio (10 means
linear).  No CM is needed: the NM keeps retrying to register meanwhile.

Last, the gRPC interceptor's cost: unary calls/s (grpc.health.v1 Check) on two
servers in this process, one with the metrics interceptor and one without,
in alternating rounds, as a ratio.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tashi.runtime import server
from tashi.runtime.client import channel
from tashi.runtime.metrics import ServiceMetrics
from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import resources_pb2 as pb

READ_RE = re.compile(r"^tashi_nm_libvirt_read_duration_seconds (\S+)$", re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_nm(tmp: Path, cores: int, memory_mib: int) -> tuple[subprocess.Popen[bytes], str, str]:
    node = tmp / "node.xml"
    node.write_text(f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>{cores}</cores>"
                    f"<threads>1</threads></cpu><memory>{memory_mib * 1024}</memory></node>\n")
    images = tmp / "images"
    images.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "base.qcow2"),
                    "16M"], check=True)
    metrics = f"127.0.0.1:{free_port()}"
    exe = str(Path(sys.executable).parent / "tashi-nm")
    proc = subprocess.Popen(
        [exe, "--listen", "127.0.0.1:0", "--cm", f"127.0.0.1:{free_port()}", "--hostname",
         "bench", "--libvirt-uri", f"test://{node}", "--images", str(images), "--state-dir",
         str(tmp / "state"), "--reserved-memory", "0", "--heartbeat-seconds", "60",
         "--metrics-listen", metrics, "--log-level", "ERROR"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"tashi-nm did not start: {line!r}")
    return proc, m.group(1), metrics


def start_vms(stub: nm_grpc.NodeManagerServiceStub, first: int, last: int) -> None:
    for iid in range(first, last + 1):
        inst = pb.Instance(
            id=iid, name=f"vm{iid}", owner=f"user{iid % 10}",
            spec=pb.InstanceSpec(cores=1, memory_mib=64, disks=[pb.Disk(uri="base.qcow2")],
                                 nics=[pb.Nic(network_id=1)]),
            status=pb.InstanceStatus(nics=[pb.Nic(network_id=1)]))
        stub.StartVm(nmpb.StartVmRequest(request_id=f"bench-{iid}", instance=inst),
                     timeout=30)


def scrape(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        body: bytes = resp.read()
    return time.perf_counter() - t0, body


def measure(url: str, scrapes: int) -> dict[str, float]:
    scrape(url)  # warm up (device lists are parsed once per VM)
    times, reads = [], []
    body = b""
    for _ in range(scrapes):
        seconds, body = scrape(url)
        times.append(seconds)
        m = READ_RE.search(body.decode())
        reads.append(float(m.group(1)) if m else float("nan"))
    times.sort()
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    return {"median": statistics.median(times), "p90": times[int(0.9 * (len(times) - 1))],
            "read": statistics.median(reads), "bytes": len(body), "series": series}


def interceptor_ratio(rounds: int = 7, calls: int = 1500) -> tuple[float, float]:
    """Median unary calls/s without and with the interceptor."""
    metrics = ServiceMetrics("127.0.0.1:0")
    plain = server.start("127.0.0.1:0", [])
    counted = server.start("127.0.0.1:0", [], interceptors=metrics.interceptors)
    rates: dict[str, list[float]] = {"plain": [], "counted": []}
    chans = {k: channel(f"127.0.0.1:{r.port}") for k, r in
             (("plain", plain), ("counted", counted))}
    try:
        stubs = {k: health_pb2_grpc.HealthStub(c) for k, c in chans.items()}
        req = health_pb2.HealthCheckRequest()
        for stub in stubs.values():
            for _ in range(300):
                stub.Check(req)
        for _ in range(rounds):
            for name, stub in stubs.items():
                t0 = time.perf_counter()
                for _ in range(calls):
                    stub.Check(req)
                rates[name].append(calls / (time.perf_counter() - t0))
    finally:
        for c in chans.values():
            c.close()
        plain.stop(0)
        counted.stop(0)
    return statistics.median(rates["plain"]), statistics.median(rates["counted"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--counts", default="100,1000", help="VM counts to measure, ascending")
    ap.add_argument("--scrapes", type=int, default=20)
    ns = ap.parse_args()
    counts = sorted(int(c) for c in ns.counts.split(","))
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, address, metrics = start_nm(Path(tmp), cores=64, memory_mib=64 * max(counts) + 1024)
        ch = channel(address)
        try:
            stub = nm_grpc.NodeManagerServiceStub(ch)
            url = f"http://{metrics}/metrics"
            started = 0
            for n in counts:
                t0 = time.perf_counter()
                start_vms(stub, started + 1, n)
                print(f"started VMs {started + 1}..{n} in {time.perf_counter() - t0:.1f}s",
                      flush=True)
                started = n
                results[n] = measure(url, ns.scrapes)
        except grpc.RpcError as exc:
            sys.exit(f"StartVm failed: {exc.code().name}: {exc.details()}")
        finally:
            ch.close()
            proc.terminate()
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()

    print(f"\none node manager on libvirt's test driver, {ns.scrapes} scrapes per count:")
    print(f"{'VMs':>6} {'scrape median':>14} {'p90':>9} {'libvirt read':>13} "
          f"{'per VM':>9} {'series':>7} {'body':>9}")
    for n, r in results.items():
        print(f"{n:>6} {r['median'] * 1000:>11.1f} ms {r['p90'] * 1000:>6.1f} ms "
              f"{r['read'] * 1000:>10.1f} ms {r['median'] / n * 1e6:>6.0f} µs "
              f"{int(r['series']):>7} {r['bytes'] / 1024:>6.0f} KiB")
    if len(counts) >= 2:
        lo, hi = counts[0], counts[-1]
        print(f"\nscrape time ratio {hi}/{lo} VMs: "
              f"{results[hi]['median'] / results[lo]['median']:.1f}x "
              f"for {hi / lo:.0f}x the VMs")
    plain, counted = interceptor_ratio()
    print(f"\ngRPC unary calls/s: {plain:.0f} without the metrics interceptor, {counted:.0f} "
          f"with it (ratio {counted / plain:.2f})")


if __name__ == "__main__":
    main()
