"""The control plane at a cluster's size: real CM, scheduler and accounting
against a fleet of real node managers (bench/fleet.py), measured in one run.

    python -m bench.bench_fleet [--hosts 1000] [--vms 20000] [--procs 8]

1. Fill: createMany in batches to --vms VMs; time to all Activating (placement)
   and to all Running (started by the hosts' node managers, reported back).
2. Steady state: CPU share and resident memory of the CM (from /proc over an
   interval), heartbeats/s the CM handled (its grpc_server_handled_total for
   Heartbeat, scraped twice), ListInstances of every VM (paged), GetUsage over
   the ledger accounting built from the whole history.
3. Churn: --rate creates/s and --rate destroys/s (single calls) for --churn
   seconds: create -> Running p50/p99, CreateInstance call p50/p99, and moments
   of overcommit in the replayed history (bench_scheduler.overcommitted).
4. Failure detection: the --kill hosts of one worker SIGSTOPped at once: time to
   all down and all their VMs Orphaned, against expire + one heartbeat; then
   SIGCONT: time until all Running again, none lost; every VM accounted for.

Measured here (2-core machine), defaults (1,000 hosts / 20,000 VMs / 8 fleet
processes / 8 users, hosts' own beat 2 s, expiry 10 s), one run on 2026-12-01
06:43 (code of f2abc68): the CM asks for a beat every 5 s (--heartbeat-rate
200) and stretches the expiry to 25 s; the beats go to its liveness process
(cm/beats.py).  Fleet 0.91 MiB and 4.1 threads per host idle, 1.45 MiB and
9.1 after the fill; fill Activating 20.7 s (966/s), Running 25.0 s (799/s),
with 48.0 of the 50.1 CPU seconds the 2 cores had spent (CM 0.45 ms/VM, its
liveness process 0.08, scheduler 0.13, accounting 0.14, the simulated hosts
1.57); fewer than 0.005 ReportInstances calls per VM; steady CM 7.8% of a
core, 310 MiB, 194 heartbeats/s heard of 200 expected; ListInstances of
20,000 median 113 ms; GetUsage by user 4 ms, by instance 387 ms; churn
offered at 100/s + 100/s for 30 s by 8 users: 100 creates/s achieved (222
calls refused as busy and sent again), create -> Running p50 0.08 s p99 0.38
s, CreateInstance p50 19 ms p99 158 ms, DeleteInstance p99 206 ms; 0
overcommits; 50 hosts frozen: down and Orphaned 24.2 s (bound 30 s), back in
5.2 s, 0 lost, every VM accounted for.  That run came in a fast moment: the
same code's CreateInstance p99 was 533 and 1,450 ms in two runs at 06:27.
This machine's speed varies through the day (the simulated hosts' cost ran
from 1.6 to 10.7 ms/VM on 2026-12-01): compare within an hour.  The RUNNING
report held after a start's answer (nm/answering.py), A/B the same hour
(05:18 to 05:27), --kill 0, one run each: before (69cea20) fill to Running
309/s, CM 1.50 ms/VM, 0.67 ReportInstances/VM, hosts 3.99 ms/VM; after
(968f236) 432/s, CM 0.98 ms/VM, 0.15 ReportInstances/VM, hosts 2.92 ms/VM.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from bench.bench_accounting import committed
from bench.bench_scheduler import history, overcommitted
from bench.fleet import Fleet
from bench.fleet_checks import RUNNING, Tracker, accounted, failure_drill
from bench.procs import children, cpu_seconds, cpu_use, proc_status
from tashi.runtime.accounting_client import AccountingClient
from tashi.runtime.client import ClusterClient
from tashi.v1 import resources_pb2 as pb
from tests.harness import CMProcess, Process, SchedulerProcess, scrape, start_accounting

# A scrape of the CM's /metrics (21,000 objects' worth) may take a while on a 2-core
# machine that also runs a thousand hosts; Prometheus itself waits 10 s by default.
SCRAPE_SECONDS = 30.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def heartbeats(metrics: str) -> float:
    """Heartbeats the CM took itself and beats its liveness process took (cm/beats.py)."""
    samples = scrape(metrics, SCRAPE_SECONDS)
    return samples.get(("tashi_cm_beats_total", ()), 0.0) + sum(
        v for (name, labels), v in samples.items()
        if name == "grpc_server_handled_total" and ("grpc_method", "Heartbeat") in labels)


def spec(name: str) -> pb.Instance:
    return pb.Instance(name=name, spec=pb.InstanceSpec(cores=1, memory_mib=2048))


def refused(metrics: str) -> float:
    """Calls the CM refused as too busy (RESOURCE_EXHAUSTED, retried by the client)."""
    return sum(v for (name, labels), v in scrape(metrics, SCRAPE_SECONDS).items()
               if name == "grpc_server_handled_total"
               and ("grpc_code", "ResourceExhausted") in labels)


def handled(metrics: str) -> Counter[str]:
    """Calls the CM took so far, by method."""
    out: Counter[str] = Counter()
    for (name, labels), v in scrape(metrics, SCRAPE_SECONDS).items():
        if name == "grpc_server_handled_total":
            out[dict(labels)["grpc_method"]] += int(v)
    return out


def handling(metrics: str, method: str) -> Counter[str]:
    """The CM's grpc_server_handling_seconds of `method` so far: count, sum and the
    cumulative buckets by upper bound (the handler's time, refusals included)."""
    out: Counter[str] = Counter()
    for (name, labels), v in scrape(metrics, SCRAPE_SECONDS).items():
        tags = dict(labels)
        if tags.get("grpc_method") != method or not name.startswith("grpc_server_handling"):
            continue
        out[tags.get("le", name.rsplit("_", 1)[-1])] += v
    return out


def commits(metrics: str) -> dict[str, Counter[str]]:
    """The CM's tashi_cm_commit_{turn,wait}_seconds so far (cm/commits.py), as
    `handling` reads a method's: "turn", and "call" and "own" for the waits."""
    out: dict[str, Counter[str]] = {"turn": Counter(), "call": Counter(), "own": Counter()}
    for (name, labels), v in scrape(metrics, SCRAPE_SECONDS).items():
        m = re.fullmatch(r"tashi_cm_commit_(turn|wait)_seconds_(bucket|count|sum)", name)
        if m:
            tags = dict(labels)
            out[tags.get("change", m.group(1))][tags.get("le", m.group(2))] += v
    return out


def in_commits(before: dict[str, Counter[str]], metrics: str) -> str:
    """The commit turns and waits since `before`: how many, their spread, turns over 0.1 s."""
    after = commits(metrics)
    d = after["turn"] - before["turn"]
    slow = d["count"] - d["0.1"]
    return (f"{d['count']:.0f} turns of the lock, {in_cm(before['turn'], after['turn'])}, "
            f"{slow:.0f} over 100 ms; waits for a turn: calls' "
            f"{in_cm(before['call'], after['call'])}; the CM's own changes' "
            f"{in_cm(before['own'], after['own'])}")


def in_cm(before: Counter[str], after: Counter[str]) -> str:
    """Mean and bucket bounds of p50/p99 between two `handling` scrapes."""
    d = after - before
    n = d["count"]
    if not n:
        return "no calls"
    bounds = sorted((float(k), v) for k, v in d.items() if k not in ("count", "sum"))

    def bound(q: float) -> str:
        le = next((b for b, v in bounds if v >= q * n), float("inf"))
        return f"<= {le * 1000:.0f} ms"
    return f"mean {1000 * d['sum'] / n:.0f} ms, p50 {bound(.5)}, p99 {bound(.99)}"


def fill(users: list[ClusterClient], tracker: Tracker, vms: int, batch: int,
         parts: dict[str, list[int]], metrics: str) -> list[int]:
    """createMany batches, the users in turn.  `parts`: the processes whose CPU
    seconds the fill is charged, by name (on this machine's 2 cores their sum per
    VM bounds the rate)."""
    cpu0, calls0, turns0 = cpu_use(parts), handled(metrics), commits(metrics)
    t0 = time.perf_counter()
    ids: list[int] = []
    for k, start in enumerate(range(0, vms, batch)):
        ids += [i.id for i in users[k % len(users)].create_instances(
            spec(f"f{start}"), count=min(batch, vms - start))]
    created = time.perf_counter() - t0
    ok = tracker.wait(lambda: len(tracker.first[RUNNING]) >= len(ids), 900)
    act = max(tracker.first[pb.INSTANCE_STATE_ACTIVATING].get(i, t0) for i in ids) - t0
    run = max(tracker.first[RUNNING].get(i, t0) for i in ids) - t0
    print(f"[fill] {vms} VMs by createMany in batches of {batch} (calls took {created:.2f}s): "
          f"all Activating after {act:.2f}s ({vms / act:,.0f}/s), all Running after "
          f"{run:.2f}s ({vms / run:,.0f}/s){'' if ok else ' NOT ALL RUNNING within 900 s'}",
          flush=True)
    cpu1 = cpu_use(parts)
    used = {name: cpu1[name] - cpu0[name] for name in parts}
    print("[fill] CPU spent until all Running: " + ", ".join(
        f"{name} {sec:.1f}s ({1e3 * sec / vms:.2f} ms/VM)" for name, sec in used.items())
        + f"; in all {sum(used.values()):.1f}s of {2 * run:.1f}s that 2 cores had", flush=True)
    calls = handled(metrics) - calls0
    print("[fill] calls the CM took per VM: " + ", ".join(
        f"{method} {n / vms:.2f}" for method, n in calls.most_common(4)), flush=True)
    print(f"[fill] {in_commits(turns0, metrics)}", flush=True)
    return ids


def cadence(metrics: str) -> tuple[float, float]:
    """The CM's heartbeat interval and host expiry for the fleet's size (cm/cadence.py)."""
    samples = scrape(metrics, SCRAPE_SECONDS)
    return (samples[("tashi_cm_heartbeat_interval_seconds", ())],
            samples[("tashi_cm_host_expiry_seconds", ())])


def steady(cm: CMProcess, metrics: str, fleet: Fleet, seconds: float,
           hosts: int, heartbeat_s: float) -> None:
    cm0, fl0, hb0, t0 = (cpu_seconds(cm.proc.pid), sum(map(cpu_seconds, fleet.pids())),
                         heartbeats(metrics), time.perf_counter())
    time.sleep(seconds)
    cm1, fl1, hb1, t1 = (cpu_seconds(cm.proc.pid), sum(map(cpu_seconds, fleet.pids())),
                         heartbeats(metrics), time.perf_counter())
    dt = t1 - t0
    rss = proc_status(cm.proc.pid)[0]
    print(f"[steady] over {dt:.1f}s idle: CM CPU {100 * (cm1 - cm0) / dt:.1f}% of one core, "
          f"CM RSS {rss / 2**20:,.0f} MiB; fleet CPU {100 * (fl1 - fl0) / dt:.1f}%; "
          f"heartbeats handled {(hb1 - hb0) / dt:,.0f}/s (Heartbeat and Beat; "
          f"{hosts} hosts / {heartbeat_s:g}s = {hosts / heartbeat_s:,.0f}/s expected)",
          flush=True)


def listing(client: ClusterClient, acc: Process, work: Path) -> None:
    times = []
    for _ in range(3):
        t = time.perf_counter()
        n = len(client.list_instances())
        times.append(time.perf_counter() - t)
    print(f"[list] ListInstances of all {n} (pages of 5,000): median "
          f"{statistics.median(times) * 1000:.0f} ms, best {min(times) * 1000:.0f} ms",
          flush=True)
    top = client.last_seq()
    t = time.perf_counter()
    while committed(work / "ledger.sqlite") < top and time.perf_counter() - t < 120:
        time.sleep(0.2)
    lag = time.perf_counter() - t
    usage = AccountingClient(acc.address, timeout=120)
    end = Timestamp()
    end.GetCurrentTime()
    for group in ("user", "instance"):
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            resp = usage.get_usage(end=end, group_by=group)
            ts.append(time.perf_counter() - t)
        print(f"[usage] GetUsage by {group} over the ledger of seq {top:,} "
              f"({len(resp.records)} records): median {statistics.median(ts) * 1000:.0f} ms "
              f"(accounting caught up {lag:.1f}s after asking)", flush=True)
    usage.close()


def churn(users: dict[str, ClusterClient], tracker: Tracker, victims: list[pb.Instance],
          rate: int, seconds: float, parts: dict[str, list[int]], metrics: str) -> list[int]:
    """`rate` creates/s and `rate` destroys/s as single calls, the users in turn,
    each destroy by the VM's owner: of `victims` first, then of the VMs this churn
    created, oldest first, once they are Running."""
    cpu0, c0, busy0 = cpu_use(parts), time.perf_counter(), refused(metrics)
    in0 = {m: handling(metrics, m) for m in ("CreateInstance", "DeleteInstance")}
    turns0 = commits(metrics)
    names = sorted(users)
    owner = {v.id: v.owner for v in victims}
    starts: dict[int, float] = {}
    call_s: list[float] = []
    del_s: list[float] = []
    gone: set[int] = set()
    lock = threading.Lock()

    def create(k: int) -> None:
        t = time.perf_counter()
        user = names[k % len(names)]
        inst = users[user].create_instances(spec(f"c{k}"))[0]
        with lock:
            call_s.append(time.perf_counter() - t)
            starts[inst.id] = t
            owner[inst.id] = user

    def destroy(k: int) -> None:
        if k < len(victims):
            iid = victims[k].id
        else:
            with lock:
                made = sorted(starts, key=starts.__getitem__)
            ripe = [i for i in made if i in tracker.first[RUNNING] and i not in gone]
            if not ripe:
                return
            iid = ripe[0]
        with lock:
            gone.add(iid)
        t = time.perf_counter()
        users[owner[iid]].instance_action("Delete", iid)
        with lock:
            del_s.append(time.perf_counter() - t)

    n = int(rate * seconds)
    t0 = time.perf_counter()
    # Enough callers that a call taking a while under load does not hold the
    # next ones back (32 were too few at 1,000 hosts: the offered rate sagged).
    with ThreadPoolExecutor(256) as pool:
        for k in range(n):
            due = t0 + k / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            pool.submit(create, k)
            pool.submit(destroy, k)
        issued = time.perf_counter() - t0
    done = time.perf_counter() - t0
    ids = [i for i in starts if i not in gone]
    tracker.wait(lambda: all(i in tracker.first[RUNNING] for i in ids), 120)
    cpu1, c1, busy = cpu_use(parts), time.perf_counter(), refused(metrics) - busy0
    lat = [tracker.first[RUNNING][i] - starts[i] for i in starts if i in tracker.first[RUNNING]]
    act = tracker.first[pb.INSTANCE_STATE_ACTIVATING]
    placed = [act[i] - starts[i] for i in starts if i in act]
    begun = [tracker.first[RUNNING][i] - act[i] for i in starts
             if i in act and i in tracker.first[RUNNING]]
    never = sum(1 for i in ids if i not in tracker.first[RUNNING])
    print(f"[churn] {n} creates + {len(del_s)} destroys at {rate}/s each by {len(users)} "
          f"users, issued in {issued:.1f}s ({busy:.0f} calls refused as busy and sent "
          f"again; all answered at {done:.1f}s: {n / done:.0f} creates/s "
          "achieved): create -> Running p50 "
          f"{pct(lat, .5):.2f}s p99 {pct(lat, .99):.2f}s max {max(lat, default=0):.2f}s "
          f"({never} never Running); CreateInstance call p50 {pct(call_s, .5) * 1000:.0f} ms "
          f"p99 {pct(call_s, .99) * 1000:.0f} ms; DeleteInstance p99 "
          f"{pct(del_s, .99) * 1000:.0f} ms", flush=True)
    print("[churn] time in the CM's handlers (refused calls included): " + "; ".join(
        f"{m} {in_cm(h, handling(metrics, m))}" for m, h in in0.items()), flush=True)
    print(f"[churn] {in_commits(turns0, metrics)}", flush=True)
    print(f"[churn] create -> Activating p50 {pct(placed, .5):.2f}s p99 {pct(placed, .99):.2f}s;"
          f" Activating -> Running p50 {pct(begun, .5):.2f}s p99 {pct(begun, .99):.2f}s; CPU "
          "over the churn: " + ", ".join(
              f"{name} {100 * (cpu1[name] - cpu0[name]) / (c1 - c0):.0f}%" for name in parts)
          + " of one core", flush=True)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=20_000)
    parser.add_argument("--procs", type=int, default=8, help="fleet worker processes")
    parser.add_argument("--batch", type=int, default=1000, help="VMs per createMany")
    parser.add_argument("--rate", type=int, default=100, help="creates/s and destroys/s")
    parser.add_argument("--users", type=int, default=8, help=(
        "users the fill and the churn are spread over (the CM admits one caller's calls "
        "up to a third of its call slots)"))
    parser.add_argument("--churn", type=float, default=30.0, help="seconds of churn")
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of steady state")
    parser.add_argument("--kill", type=int, default=50, help="hosts frozen at once")
    parser.add_argument("--heartbeat-seconds", type=float, default=2.0,
                        help="the hosts' own interval (the CM may ask for a longer one)")
    parser.add_argument("--expire-seconds", type=float, default=10.0,
                        help="the CM's --expire-host-seconds (stretched with the interval)")
    parser.add_argument("--heartbeat-rate", type=float, default=200.0,
                        help="the CM's --heartbeat-rate (0: no limit)")
    parser.add_argument("--beat-listen", default="",
                        help="the CM's --beat-listen (off: the CM hears the beats itself)")
    parser.add_argument("--fleet-nice", type=int, default=0, help=(
        "niceness of the simulated hosts' processes (real hosts have their own CPUs; at "
        "10 the control plane gets this machine's first, but starved hosts then miss "
        "heartbeats and expire during the fill)"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    # SIGTERM ends the run through the `finally` below, which stops every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    cm = fleet = sched = acc = None
    try:
        cm = CMProcess(work, images=str(work), quota_instances=0, log_level="INFO",
                       expire_host_seconds=args.expire_seconds,
                       heartbeat_rate=args.heartbeat_rate, beat_listen=args.beat_listen,
                       metrics_listen="127.0.0.1:0")
        m = re.search(r"serving metrics on http://(\S+)/metrics", cm.log_path.read_text())
        assert m, "the CM did not say where its metrics are"
        metrics = m.group(1)
        client = ClusterClient(cm.address, timeout=120)
        names = [f"user{k}" for k in range(args.users)]
        for name in names:
            client.create_user(name)
        fleet = Fleet(cm.address, args.hosts, args.procs, work / "fleet",
                      heartbeat_seconds=args.heartbeat_seconds, isolate=args.kill,
                      nice=args.fleet_nice)
        t = time.perf_counter()
        fleet.start()
        up = fleet.wait_up(client)
        print(f"[fleet] {args.hosts} hosts (32 cores, 64 GiB each) in {len(fleet.groups)} "
              f"processes at nice {args.fleet_nice}, all up after "
              f"{time.perf_counter() - t:.1f}s ({up:.1f}s of it waiting for registration); "
              f"{fleet.cost()}", flush=True)
        time.sleep(1.0)  # a round of the CM's liveness monitor sees them all
        asked, expire = cadence(metrics)
        beat = max(args.heartbeat_seconds, asked)
        print(f"[fleet] the CM asks for a heartbeat every {asked:g}s at most "
              f"{args.heartbeat_rate:g}/s (the hosts' own: {args.heartbeat_seconds:g}s); "
              f"a host is down after {expire:g}s unheard", flush=True)
        sched = SchedulerProcess(work, cm.address, "--log-level", "WARNING")
        acc = start_accounting(work, cm.address, "--log-level", "WARNING")
        tracker = Tracker(client, client.last_seq())
        tracker.start()
        users = {name: ClusterClient(cm.address, user=name, timeout=120) for name in names}
        parts = {"CM": [cm.proc.pid], "its liveness process": children(cm.proc.pid, "spawn_main"),
                 "scheduler": [sched.proc.pid], "accounting": [acc.proc.pid],
                 "fleet": fleet.pids(), "bench": [os.getpid()]}
        fill(list(users.values()), tracker, args.vms, args.batch, parts, metrics)
        print(f"[fleet] after the fill: {fleet.cost()}", flush=True)
        steady(cm, metrics, fleet, args.steady, args.hosts, beat)
        listing(client, acc, work)
        frozen = set(fleet.groups[-1].names) if args.kill else set()
        hosts = {h.id: h.name for h in client.list_hosts()}
        victims = [i for i in client.list_instances()
                   if hosts.get(i.status.host_id) not in frozen]
        churn(users, tracker, victims, args.rate, args.churn, parts, metrics)
        events = history(client)
        print(f"[churn] moments of overcommit in the replayed history of {len(events):,} "
              f"events: {overcommitted(events)}", flush=True)
        if args.kill:
            drill = failure_drill(client, fleet, fleet.groups[-1], tracker, timeout=120)
            print(f"[failure] {drill} (bound: expire {expire:g}s + one heartbeat {beat:g}s "
                  f"= {expire + beat:g}s)", flush=True)
        problems = accounted(client, fleet)
        kinds = Counter(re.sub(r"\d+", "N", p) for p in problems)
        print(f"[end] {len(client.list_instances())} instances; not accounted for: "
              f"{len(problems)} {dict(kinds)}; {fleet.cost()}; CM RSS "
              f"{proc_status(cm.proc.pid)[0] / 2**20:,.0f} MiB; the bench's watch broke and "
              f"was resumed {len(tracker.resumed)} times {tracker.resumed}", flush=True)
        tracker.cancel()
        for user in users.values():
            user.close()
        client.close()
    finally:
        if fleet is not None:
            fleet.stop()
        for p in (sched, acc, cm):
            if p is not None:
                p.stop()
        if args.keep:
            print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
