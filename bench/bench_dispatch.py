"""End to end: createMany -> Activating (placement) -> Running (the CM's calls to
real node managers and their answers), timed apart.

Starts a real `tashi-cm`, a `tashi-scheduler` and N real `tashi-nm` processes,
each on its own simulated host (libvirt's test driver, tests.harness), creates
the VMs in one createMany call and follows the event stream until every VM is
Activating and then Running.  With `--disk` every VM runs on a qcow2 overlay of
a small base image in the image store (the NM makes one overlay per VM); with
`--both` the VMs are made without disks, destroyed, and made again with disks,
on the same cluster, so the two figures come from one run.

    python -m bench.bench_dispatch --nms 50 --vms 1600 [--disk | --both]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.procs import cpu_use
from tashi.runtime.client import ClusterClient
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import CMProcess, NMProcess, SchedulerProcess, image_store, stop_all, wait_for

S = pb
ACTIVATING, RUNNING, HELD = (S.INSTANCE_STATE_ACTIVATING, S.INSTANCE_STATE_RUNNING,
                             S.INSTANCE_STATE_HELD)


class Follower(threading.Thread):
    """When each instance of this round first reached Activating and Running."""

    def __init__(self, client: ClusterClient, since: int, want: int) -> None:
        super().__init__(daemon=True)
        self.want = want
        self.activating: dict[int, float] = {}
        self.running: dict[int, float] = {}
        self.held: dict[int, str] = {}
        self.done = threading.Event()
        self._stream = client.watch_events(since, max_batch=5000,
                                           kinds=[cmpb.RESOURCE_KIND_INSTANCE])

    def run(self) -> None:
        try:
            for events in self._stream:
                now = time.perf_counter()
                for ev in events:
                    st = ev.instance.status
                    if st.state == ACTIVATING:
                        self.activating.setdefault(ev.instance.id, now)
                    elif st.state == RUNNING:
                        self.running.setdefault(ev.instance.id, now)
                    elif st.state == HELD:
                        self.held[ev.instance.id] = st.reason
                if len(self.running) + len(self.held) >= self.want:
                    self.done.set()
        finally:
            self.done.set()

    def cancel(self) -> None:
        self._stream.cancel()


def fill(root: ClusterClient, alice: ClusterClient, vms: int, disk: bool) -> dict[str, float]:
    follower = Follower(root, root.last_seq(), vms)
    follower.start()
    spec = pb.InstanceSpec(cores=1, memory_mib=64,
                           disks=[pb.Disk(uri="base.qcow2")] if disk else [])
    t0 = time.perf_counter()
    alice.create_instances(pb.Instance(name="d" if disk else "v", spec=spec), count=vms)
    answered = time.perf_counter()
    if not follower.done.wait(600):
        raise SystemExit(f"after 600 s only {len(follower.running)} of {vms} VMs run")
    follower.cancel()
    if follower.held:
        first = next(iter(follower.held.values()))
        raise SystemExit(f"{len(follower.held)} VMs were held, e.g.: {first}")
    placed = max(follower.activating.values()) - t0
    running = max(follower.running.values()) - t0
    lags = sorted(follower.running[i] - follower.activating[i] for i in follower.running
                  if i in follower.activating)
    return {"create": answered - t0, "activating": placed, "running": running,
            "first_activating": min(follower.activating.values()) - t0,
            "lag_p50": lags[len(lags) // 2], "lag_p99": lags[int(len(lags) * 0.99)]}


def empty(root: ClusterClient, alice: ClusterClient) -> None:
    """Delete every instance and wait until the cluster holds none."""
    ids = [i.id for i in alice.list_instances()]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda iid: alice.instance_action("Delete", iid), ids))
    wait_for(lambda: not root.list_instances(), timeout=300, interval=0.5, what="no instances")


def report(label: str, vms: int, t: dict[str, float], cpu: dict[str, float]) -> None:
    start_stage = t["running"] - t["activating"]
    print(f"{label:>9}: createMany answered {t['create']:.2f} s; all Activating at "
          f"{t['activating']:.2f} s ({vms / t['activating']:,.0f} VMs/s); all Running at "
          f"{t['running']:.2f} s ({vms / t['running']:,.0f} VMs/s to Running; the start stage "
          f"alone {start_stage:.2f} s)", flush=True)
    starting = t["running"] - t["first_activating"]
    print(f"           starts: first Activating -> last Running {starting:.2f} s "
          f"({vms / starting:,.0f} VMs/s); Activating -> Running per VM p50 "
          f"{t['lag_p50'] * 1000:.0f} ms, p99 {t['lag_p99'] * 1000:.0f} ms", flush=True)
    print("           CPU seconds during the round: " + ", ".join(
        f"{name} {sec:.1f}" for name, sec in cpu.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nms", type=int, default=50)
    parser.add_argument("--vms", type=int, default=1600)
    parser.add_argument("--disk", action="store_true", help="every VM on a qcow2 overlay")
    parser.add_argument("--both", action="store_true", help="without disks, then with")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    per_host = -(-args.vms // args.nms)
    work = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    images = image_store(work / "images")
    procs: list[CMProcess | NMProcess | SchedulerProcess] = []
    try:
        cm = CMProcess(work, images=str(images), quota_instances=0, log_level="WARNING")
        procs.append(cm)
        print(f"cm pid {cm.proc.pid} at {cm.address}", flush=True)
        root = ClusterClient(cm.address, timeout=120)
        root.create_user("alice")
        alice = ClusterClient(cm.address, user="alice", timeout=120)
        names = [f"h{i}" for i in range(args.nms)]
        for name in names:
            root.create_host(name)
        t = time.perf_counter()

        def nm(name: str) -> None:
            procs.append(NMProcess(work / name, cm.address, name, images=images,
                                   cores=per_host + 4, memory_mib=per_host * 64 + 1024,
                                   heartbeat_seconds=2.0, extra=["--log-level", "WARNING"]))

        # Each started NM is in `procs` at once, so a failure later still stops it;
        # more starting at once time out on a busy machine.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(nm, names))
        wait_for(lambda: all(h.up for h in root.list_hosts()), timeout=120, what="all hosts up")
        print(f"{args.nms} node managers up in {time.perf_counter() - t:.1f} s "
              f"(room for {per_host} VMs each)", flush=True)
        sched = SchedulerProcess(work, cm.address, "--log-level", "WARNING")
        procs.append(sched)
        groups = {"cm": [cm.proc.pid], "scheduler": [sched.proc.pid],
                  f"{args.nms} NMs": [p.proc.pid for p in procs if isinstance(p, NMProcess)]}
        rounds = [False, True] if args.both else [args.disk]
        for n, disk in enumerate(rounds):
            if n:
                empty(root, alice)
            before = cpu_use(groups)
            times = fill(root, alice, args.vms, disk)
            after = cpu_use(groups)
            report("disk" if disk else "no disk", args.vms, times,
                   {k: after[k] - before[k] for k in groups})
        alice.close()
        root.close()
    finally:
        stop_all(*reversed(procs))
        if args.keep:
            print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
