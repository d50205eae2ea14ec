"""Cluster manager figures, all measured in one run against a real `tashi-cm` on loopback.

    python bench/bench_cm.py [--calls 3000] [--instances 10000]

Prints: CreateInstance calls/s beside a no-op unary call (grpc.health.v1 Check) as a
ratio; creates/s through createMany batches; time to list all instances in
pages of the largest size allowed (5,000).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tashi.runtime.client import MAX_PAGE, ClusterClient
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb


def start_cm(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = str(Path(sys.executable).parent / "tashi-cm")
    proc = subprocess.Popen([exe, "--listen", "127.0.0.1:0", "--db", str(tmp / "cm.db"),
                             "--log-level", "WARNING"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"tashi-cm did not start: {line!r}")
    return proc, m.group(1)


def rate(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def small(name: str) -> pb.Instance:
    return pb.Instance(name=name, spec=pb.InstanceSpec(cores=1, memory_mib=64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--instances", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1000)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_cm(Path(tmp))
        try:
            client = ClusterClient(address, user="root")
            client.wait_ready()
            health = health_pb2_grpc.HealthStub(client._channel)
            check = health_pb2.HealthCheckRequest()
            rate(300, lambda i: health.Check(check))  # warm up
            rate(300, lambda i: client.create_instances(small(f"w{i}"), request_id=f"w{i}"))
            noop = rate(ns.calls, lambda i: health.Check(check))
            creates = rate(ns.calls, lambda i: client.create_instances(
                small(f"c{i}"), request_id=f"c{i}"))
            print(f"no-op unary (health Check):      {noop:8.0f} calls/s")
            print(f"CreateInstance (one per call):   {creates:8.0f} calls/s")
            print(f"  ratio CreateInstance / no-op:  {creates / noop:8.2f}   (target >= 0.7)")

            for i in list(client.list_instances()):
                client.instance_action("Delete", i.id)
            batches = ns.instances // ns.batch
            t0 = time.perf_counter()
            for b in range(batches):
                client.create_instances(small(f"m{b}"), count=ns.batch, request_id=f"m{b}")
            elapsed = time.perf_counter() - t0
            made = batches * ns.batch
            print(f"createMany, {batches} batches of {ns.batch}: {made / elapsed:8.0f} creates/s"
                  f"   (target >= 10,000/s)")

            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                got, token = 0, ""
                while True:
                    resp = client.call(client.cm.ListInstances, cmpb.ListInstancesRequest(
                        page_size=MAX_PAGE, page_token=token))
                    got += len(resp.instances)
                    token = resp.next_page_token
                    if not token:
                        break
                times.append(time.perf_counter() - t0)
            assert got == made, (got, made)
            times.sort()
            print(f"list all {got} instances, pages of {MAX_PAGE}: median "
                  f"{times[len(times) // 2] * 1000:6.1f} ms, best {times[0] * 1000:6.1f} ms"
                  f"   (target < 100 ms)")
            client.close()
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
