"""End to end: placements committed through the cluster manager, Pending ->
Activating, and with --nms on to Running.

Starts a real `tashi-cm` (fresh store in a scratch folder) and one or more
real `tashi-scheduler` processes.  The hosts are either synthetic (the
default: CreateHost + RegisterHost with cores and memory and no
`nm_address`, so the CM never calls a node manager for them, a placed VM
stays Activating and keeps its capacity: placement alone is measured) or,
with --nms, real node managers on libvirt's test driver (bench/fleet.py, one
NodeManager code path per host in --procs processes): then each VM goes on
to Running, started by its host's node manager and reported back, and that
stage is timed as well.  The VMs are created in one createMany call and the
event stream is watched until every VM is Activating (and Running).  Then it
replays the whole history and checks that no host ever held more than its
capacity.

    python -m bench.bench_scheduler [--hosts 1000] [--vms 10000] [--schedulers 1]
                                    [--nms [--procs 8]]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.fleet import Fleet
from tashi.runtime import fit
from tashi.runtime.auth import user_metadata
from tashi.runtime.client import ClusterClient
from tashi.v1 import cluster_manager_pb2 as cm
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import resources_pb2 as pb

BIN = Path(sys.executable).parent


def start(argv: list[str], pattern: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a service and wait for its ready line; answers the process and the match."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(pattern, line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout or ()],
                             daemon=True).start()
            return proc, m.group(1)
    raise SystemExit(f"{argv[0]} did not start; see {log}")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)



class Watcher(threading.Thread):
    """Counts instances entering Activating and Running; keeps every event for the
    replay."""

    def __init__(self, client: ClusterClient, since: int, want: int) -> None:
        super().__init__(daemon=True)
        self.want = want
        self.events: list[pb.Event] = []
        self.done = threading.Event()
        self.finished_at = 0.0
        self.activated: set[int] = set()
        self.running: set[int] = set()
        self.all_running = threading.Event()
        self.running_at = 0.0
        self._stream = client.cm.WatchEvents(cm.WatchEventsRequest(since=since, max_batch=5000),
                                             metadata=user_metadata(client.user))

    def run(self) -> None:
        try:
            for resp in self._stream:
                for ev in resp.events:
                    self.events.append(ev)
                    if ev.WhichOneof("subject") == "instance":
                        if ev.instance.status.state == pb.INSTANCE_STATE_ACTIVATING:
                            self.activated.add(ev.instance.id)
                        elif ev.instance.status.state == pb.INSTANCE_STATE_RUNNING:
                            self.running.add(ev.instance.id)
                if len(self.activated) >= self.want and not self.done.is_set():
                    self.finished_at = time.perf_counter()
                    self.done.set()
                if len(self.running) >= self.want and not self.all_running.is_set():
                    self.running_at = time.perf_counter()
                    self.all_running.set()
        except Exception:  # cancelled at the end
            self.done.set()
            self.all_running.set()

    def cancel(self) -> None:
        self._stream.cancel()


def history(client: ClusterClient) -> list[pb.Event]:
    last = client.last_seq()
    out: list[pb.Event] = []
    stream = client.cm.WatchEvents(cm.WatchEventsRequest(since=0, max_batch=5000),
                                   metadata=user_metadata(client.user))
    for resp in stream:
        out.extend(resp.events)
        if out[-1].seq >= last:
            break
    stream.cancel()
    return out


def overcommitted(events: list[pb.Event]) -> int:
    """Moments at which some host held more than its capacity, replaying the history."""
    capacity: dict[int, tuple[int, int]] = {}
    used: Counter[tuple[int, str]] = Counter()
    charged: dict[int, tuple[tuple[int, ...], int, int]] = {}
    bad = 0
    for ev in events:
        kind = ev.WhichOneof("subject")
        if kind == "host":
            capacity[ev.host.id] = (ev.host.cores, ev.host.memory_mib)
        elif kind == "instance":
            inst = ev.instance
            for h in charged.get(inst.id, ((), 0, 0))[0]:
                used[(h, "c")] -= charged[inst.id][1]
                used[(h, "m")] -= charged[inst.id][2]
            if ev.type == pb.EVENT_TYPE_INSTANCE_DELETED:
                charged.pop(inst.id, None)
                continue
            st = inst.status
            charged[inst.id] = (fit.charged_hosts(st.state, st.host_id,
                                                  st.migration_target_host_id),
                                inst.spec.cores, inst.spec.memory_mib)
            for h in charged[inst.id][0]:
                used[(h, "c")] += inst.spec.cores
                used[(h, "m")] += inst.spec.memory_mib
                cores, memory = capacity.get(h, (0, 0))
                bad += used[(h, "c")] > cores or used[(h, "m")] > memory
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--schedulers", type=int, default=1)
    parser.add_argument("--nms", action="store_true",
                        help="hosts are real node managers (bench/fleet.py): the VMs go on "
                             "to Running, and that stage is timed too")
    parser.add_argument("--procs", type=int, default=8, help="fleet processes (with --nms)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    (work / "images").mkdir()
    procs: list[subprocess.Popen[str]] = []
    fleet: Fleet | None = None
    try:
        cm_proc, address = start(
            [str(BIN / "tashi-cm"), "--listen", "127.0.0.1:0", "--db", str(work / "cm.db"),
             "--images", str(work / "images"), "--expire-host-seconds", "86400",
             "--quota-instances", "0",  # alice fills the cluster: no quota here
             "--log-level", "WARNING"],
            r"listening on (\S+:\d+)", work / "cm.log")
        procs.append(cm_proc)
        client = ClusterClient(address, timeout=120)
        client.create_user("alice")
        t = time.perf_counter()
        if args.nms:
            fleet = Fleet(address, args.hosts, args.procs, work / "fleet", cores=32,
                          memory_mib=131072 + 512)  # the NM keeps 512 MiB for the host
            fleet.start()
            fleet.wait_up(client)
            print(f"{args.hosts} hosts of 32 cores, 128 GiB, each a real node manager "
                  f"(bench/fleet.py, {args.procs} processes), up in "
                  f"{time.perf_counter() - t:.1f}s")
        else:
            for i in range(args.hosts):
                client.create_host(f"h{i}")
                client.call(client.registry.RegisterHost, nr.RegisterHostRequest(
                    name=f"h{i}", cores=32, memory_mib=131072, version="0.1.0"))
            print(f"{args.hosts} synthetic hosts of 32 cores, 128 GiB added in "
                  f"{time.perf_counter() - t:.1f}s")
        for i in range(args.schedulers):
            proc, _ = start([str(BIN / "tashi-scheduler"), "--cm", address,
                             "--log-level", "WARNING"],
                            r"connected to (\S+:\d+)", work / f"sched{i}.log")
            procs.append(proc)
        watcher = Watcher(client, client.last_seq(), args.vms)
        watcher.start()
        alice = ClusterClient(address, user="alice", timeout=120)
        t0 = time.perf_counter()
        alice.create_instances(pb.Instance(name="vm",
                                           spec=pb.InstanceSpec(cores=1, memory_mib=2048)),
                               count=args.vms)
        created = time.perf_counter()
        if not watcher.done.wait(600):
            raise SystemExit("not all VMs were placed within 10 minutes")
        placing = watcher.finished_at - created
        print(f"createMany of {args.vms} VMs answered in {created - t0:.2f}s")
        print(f"{len(watcher.activated)} Pending -> Activating in {placing:.2f}s after that: "
              f"{args.vms / placing:,.0f} placements/s with {args.schedulers} scheduler(s) "
              f"({args.vms / (watcher.finished_at - t0):,.0f}/s counting the createMany)")
        if fleet is not None:
            if not watcher.all_running.wait(600):
                raise SystemExit("not all VMs were Running within 10 minutes")
            print(f"{len(watcher.running)} Running {watcher.running_at - created:.2f}s after "
                  f"the createMany answered: {args.vms / (watcher.running_at - created):,.0f}"
                  f" VMs/s started by their node managers and reported back "
                  f"({watcher.running_at - watcher.finished_at:.2f}s after the last "
                  "placement)")
        watcher.cancel()
        events = history(client)
        hosts = client.list_hosts()
        over_now = sum(h.used_cores > h.cores or h.used_memory_mib > h.memory_mib for h in hosts)
        print(f"overcommitted hosts: {over_now} now; moments of overcommit in the replayed "
              f"history of {len(events)} events: {overcommitted(events)}")
        alice.close()
        client.close()
    finally:
        if fleet is not None:
            fleet.stop()
        for proc in reversed(procs):
            stop(proc)
        if args.keep:
            print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
