"""Accounting figures, measured in one run.

    python bench/bench_accounting.py [--ingest-instances 20000] [--ledger-events 1000000]

1. Ingest end to end: a real `tashi-cm` holds a history made through its RPCs
   (createMany, and synthetic node managers reporting RUNNING / PAUSED / EXITED);
   a fresh `tashi-accounting` process replays it over WatchEvents into its
   ledger.  Prints events committed per second (target >= 10,000/s), with and
   without process start-up, beside the ledger alone (Ledger.apply in
   process, no gRPC) as a ratio.
2. GetUsage over a ledger of --ledger-events synthetic events (interleaved
   lifecycles of many users on many hosts): a `tashi-accounting` process
   serves it and a client times GetUsage calls (target < 200 ms); and, in
   process, usage by user from the usage curves beside reading every billed
   interval, as a ratio.
"""

from __future__ import annotations

import argparse
import heapq
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from tashi.accounting.ledger import Ledger
from tashi.accounting.usage import GroupBy, usage, usage_scan
from tashi.runtime.accounting_client import AccountingClient
from tashi.runtime.client import ClusterClient
from tashi.runtime.version import VERSION
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import resources_pb2 as pb

S = pb
NS = 1_000_000_000


def spawn(name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    exe = str(Path(sys.executable).parent / name)
    proc = subprocess.Popen([exe, *args, "--log-level", "WARNING"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"{name} did not start: {line!r}")
    return proc, m.group(1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0


# -- 1. ingest end to end -------------------------------------------------------------


def make_history(address: str, instances: int, hosts: int = 10, batch: int = 1000) -> int:
    """A CM history of about 4 events per instance, through the CM's own RPCs."""
    client = ClusterClient(address, user="root")
    client.wait_ready()
    names = [f"h{i}" for i in range(hosts)]
    for name in names:
        client.create_host(name)
        client.call(client.registry.RegisterHost, nr.RegisterHostRequest(
            name=name, cores=1 << 20, memory_mib=1 << 40, version=VERSION,
            nm_address="127.0.0.1:1"))
    ids: list[int] = []
    for start in range(0, instances, batch):
        made = client.create_instances(pb.Instance(name=f"b{start}",
                                                   spec=pb.InstanceSpec(cores=1, memory_mib=128)),
                                       count=min(batch, instances - start))
        ids.extend(i.id for i in made)
    report_seq = dict.fromkeys(names, 0)
    for state in (S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED, S.INSTANCE_STATE_EXITED):
        for start in range(0, len(ids), batch):
            chunk = ids[start:start + batch]
            host = names[(start // batch) % hosts]
            reports = []
            for iid in chunk:
                report_seq[host] += 1
                reports.append(nr.InstanceReport(instance_id=iid, vm_id=f"vm-{iid}", state=state,
                                                 report_seq=report_seq[host]))
            client.call(client.registry.ReportInstances,
                        nr.ReportInstancesRequest(name=host, reports=reports))
    top = client.last_seq()
    client.close()
    return int(top)


def bench_ingest(tmp: Path, instances: int) -> None:
    cm, address = spawn("tashi-cm", "--listen", "127.0.0.1:0", "--db", str(tmp / "cm.db"),
                        "--expire-host-seconds", "3600")
    try:
        t0 = time.perf_counter()
        top = make_history(address, instances)
        made = time.perf_counter() - t0
        print(f"CM history: {top:,} events made in {made:.1f} s")
        db = tmp / "ingest.sqlite"
        start = time.perf_counter()
        acc, _ = spawn("tashi-accounting", "--cm", address, "--listen", "127.0.0.1:0",
                       "--db", str(db), "--reconcile-seconds", "0")
        try:
            first_seq, first_t = 0, 0.0
            while (seq := committed(db)) < top:
                if seq and not first_seq:
                    first_seq, first_t = seq, time.perf_counter()
                time.sleep(0.005)
            end = time.perf_counter()
        finally:
            stop(acc)
    finally:
        stop(cm)
    total = top / (end - start)
    streaming = (top - first_seq) / (end - first_t) if first_t else total
    print(f"ingest end to end (CM WatchEvents -> committed ledger): {streaming:,.0f} events/s "
          f"once streaming; {total:,.0f} events/s including process start-up "
          f"({end - start:.2f} s for {top:,} events)")

    # The same history into a ledger in this process, without gRPC.
    events = _read_history(db)
    led = Ledger(str(tmp / "inproc.sqlite"))
    t0 = time.perf_counter()
    for i in range(0, len(events), 1000):
        led.apply(events[i:i + 1000])
    inproc = len(events) / (time.perf_counter() - t0)
    led.close()
    print(f"ledger alone (Ledger.apply, batches of 1,000): {inproc:,.0f} events/s; "
          f"end to end / ledger alone = {streaming / inproc:.2f}")


def _read_history(db: Path) -> list[pb.Event]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [pb.Event.FromString(body) for (body,) in
                conn.execute("SELECT body FROM ledger WHERE kind = 1 ORDER BY id")]


# -- 2. GetUsage over a large ledger ---------------------------------------------------

LIFECYCLES: list[list[tuple[float, int, bool]]] = [
    # (seconds after the previous step, state, moves to another host)
    [(30, S.INSTANCE_STATE_ACTIVATING, False), (20, S.INSTANCE_STATE_RUNNING, False),
     (3000, S.INSTANCE_STATE_PAUSING, False), (2, S.INSTANCE_STATE_PAUSED, False),
     (900, S.INSTANCE_STATE_UNPAUSING, False), (2, S.INSTANCE_STATE_RUNNING, False),
     (5000, S.INSTANCE_STATE_DESTROYING, False), (3, -1, False)],
    [(30, S.INSTANCE_STATE_ACTIVATING, False), (20, S.INSTANCE_STATE_RUNNING, False),
     (4000, S.INSTANCE_STATE_MIGRATE_PREP, False), (5, S.INSTANCE_STATE_MIGRATE_TRANS, False),
     (30, S.INSTANCE_STATE_RUNNING, True), (6000, S.INSTANCE_STATE_SHUTTING_DOWN, False),
     (20, -1, False)],
    [(30, S.INSTANCE_STATE_ACTIVATING, False), (20, S.INSTANCE_STATE_RUNNING, False),
     (7000, S.INSTANCE_STATE_SUSPENDING, False), (10, S.INSTANCE_STATE_SUSPENDED, False),
     (3000, S.INSTANCE_STATE_PENDING, False), (30, S.INSTANCE_STATE_ACTIVATING, True),
     (20, S.INSTANCE_STATE_RUNNING, False), (2000, S.INSTANCE_STATE_DESTROYING, False),
     (3, -1, False)],
]


def synthetic_stream(n_events: int, users: int, hosts: int, seed: int = 7,
                     t0: int = 1_700_000_000) -> Iterator[pb.Event]:
    """Interleaved lifecycles in time order: a new instance every few seconds, each
    living for hours, so tens of thousands run at once."""
    rng = random.Random(seed)
    host_names = {h: f"node{h:03d}" for h in range(1, hosts + 1)}
    seq = 0
    for h, name in host_names.items():
        seq += 1
        yield pb.Event(seq=seq, type=S.EVENT_TYPE_HOST_CREATED,
                       time=_ts(t0), host=pb.Host(id=h, name=name, up=True))
    heap: list[tuple[float, int, int]] = []  # (time, instance id, next step)
    live: dict[int, tuple[pb.Instance, list[tuple[float, int, bool]]]] = {}
    next_arrival = float(t0)
    iid = 0
    while seq < n_events:
        if not heap or next_arrival <= heap[0][0]:
            iid += 1
            inst = pb.Instance(id=iid, name=f"vm{iid}", owner=f"user{rng.randrange(users)}",
                               spec=pb.InstanceSpec(
                                   cores=rng.choice([1, 2, 4, 8]),
                                   memory_mib=rng.choice([512, 1024, 4096, 8192])),
                               status=pb.InstanceStatus(state=S.INSTANCE_STATE_PENDING))
            steps = [(d * rng.uniform(0.5, 1.5), s, m) for d, s, m in rng.choice(LIFECYCLES)]
            live[iid] = (inst, steps)
            seq += 1
            yield pb.Event(seq=seq, type=S.EVENT_TYPE_INSTANCE_CREATED, time=_ts(next_arrival),
                           instance=inst)
            heapq.heappush(heap, (next_arrival + steps[0][0], iid, 0))
            next_arrival += rng.expovariate(1 / 3.0)
            continue
        when, i, step = heapq.heappop(heap)
        inst, steps = live[i]
        _delay, state, moves = steps[step]
        seq += 1
        if state == -1:
            del live[i]
            yield pb.Event(seq=seq, type=S.EVENT_TYPE_INSTANCE_DELETED, time=_ts(when),
                           instance=inst)
            continue
        new = pb.Instance()
        new.CopyFrom(inst)
        new.status.state = state  # type: ignore[assignment]
        if state == S.INSTANCE_STATE_ACTIVATING or moves:
            h = rng.randint(1, hosts)
            new.status.host_id, new.status.host_name = h, host_names[h]
        elif state in (S.INSTANCE_STATE_SUSPENDED, S.INSTANCE_STATE_PENDING):
            new.status.host_id, new.status.host_name = 0, ""
        live[i] = (new, steps)
        yield pb.Event(seq=seq, type=S.EVENT_TYPE_INSTANCE_UPDATED, time=_ts(when), instance=new)
        if step + 1 < len(steps):
            heapq.heappush(heap, (when + steps[step + 1][0], i, step + 1))


def _ts(t: float) -> Timestamp:
    ns = int(t * NS)
    return Timestamp(seconds=ns // NS, nanos=ns % NS)


def timed(fn: Callable[[], object], repeat: int = 7) -> tuple[float, float, object]:
    fn()  # warm the page cache and the server thread's connection
    times = []
    out: object = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, min(times) * 1000, out


def bench_usage(tmp: Path, n_events: int, users: int, hosts: int) -> None:
    db = tmp / "big.sqlite"
    led = Ledger(str(db))
    t0 = time.perf_counter()
    batch: list[pb.Event] = []
    first_ns = last_ns = 0
    for ev in synthetic_stream(n_events, users, hosts):
        batch.append(ev)
        if len(batch) == 10_000:
            led.apply(batch)
            batch = []
        last_ns = ev.time.seconds * NS
        first_ns = first_ns or last_ns
    if batch:
        led.apply(batch)
    built = time.perf_counter() - t0
    intervals = led.reader().execute("SELECT COUNT(*) FROM intervals").fetchone()[0]
    led.close()
    size = sum(p.stat().st_size for p in tmp.glob("big.sqlite*")) / 2**20
    print(f"ledger of {n_events:,} events built in {built:.1f} s ({n_events / built:,.0f}/s); "
          f"{intervals:,} billed intervals, {size:.0f} MiB on disk")

    # The same question answered from the usage curves and by reading every interval.
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    curves_ms, _, _ = timed(lambda: usage(reader, start_ns=0, end_ns=last_ns,
                                          group_by=GroupBy.USER), repeat=3)
    scan_ms, _, _ = timed(lambda: usage_scan(reader, start_ns=0, end_ns=last_ns,
                                             group_by=GroupBy.USER), repeat=3)
    reader.close()
    print(f"usage by user in process: curves {curves_ms:.1f} ms, reading every interval "
          f"{scan_ms:.1f} ms (curves {scan_ms / curves_ms:.0f}x faster)")

    acc, address = spawn("tashi-accounting", "--cm", "127.0.0.1:1", "--listen", "127.0.0.1:0",
                         "--db", str(db), "--reconcile-seconds", "0")
    try:
        client = AccountingClient(address, user="root", timeout=120)
        mid = (first_ns + last_ns) // 2
        end = _ts(last_ns / NS)
        cases: list[tuple[str, Callable[[], object]]] = [
            ("all users, by user, whole ledger",
             lambda: client.get_usage(end=end, group_by="user")),
            ("all users, by host, whole ledger",
             lambda: client.get_usage(end=end, group_by="host")),
            ("one user, by instance, whole ledger",
             lambda: client.get_usage(user="user7", end=end, group_by="instance")),
            ("all users, by user, one day in the middle",
             lambda: client.get_usage(start=_ts(mid / NS), end=_ts(mid / NS + 86400),
                                      group_by="user")),
            ("all users, by instance, whole ledger",
             lambda: client.get_usage(end=end, group_by="instance")),
        ]
        for name, fn in cases:
            median, best, resp = timed(fn)
            records = len(resp.records)  # type: ignore[attr-defined]
            verdict = "" if "by instance, whole" in name and "all" in name else \
                f" ({'meets' if median < 200 else 'MISSES'} < 200 ms)"
            print(f"GetUsage {name}: median {median:.1f} ms, best {best:.1f} ms, "
                  f"{records:,} records{verdict}")
        client.close()
    finally:
        stop(acc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ingest-instances", type=int, default=20_000,
                    help="instances in the CM history (about 4 events each)")
    ap.add_argument("--ledger-events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--hosts", type=int, default=100)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_ingest(Path(tmp), ns.ingest_instances)
        bench_usage(Path(tmp), ns.ledger_events, ns.users, ns.hosts)


if __name__ == "__main__":
    main()
