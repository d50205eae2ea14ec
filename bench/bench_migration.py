"""Live migration through Tashi beside libvirt alone, on two real hosts, in one run.

    python -m bench.bench_migration [--rounds 5] [--memory 128]

(as root, from the repository root or anywhere: the repository is put on the path.)

One tests/twohost_cluster.py TwoHostCluster: two private libvirtds on this
machine (tests/twohosts.py), migrating over libvirt's TLS transport with the
memory stream over TLS too, and the whole Tashi stack on them (CM, scheduler,
one NM per host, mutual TLS).  Two idle guests of the same size run side by
side; each of `--rounds` rounds moves them there and back in each of three
ways, the ways taking turns migration by migration (tashi a->b, virsh a->b,
api b->a, tashi b->a, api a->b, virsh b->a) so machine noise falls on all:

  tashi    an instance booted through Tashi, moved with MigrateInstance
           (`client.migrate_instance`); total: from the call until the CM's
           event stream shows it Running on the target, as the client sees it.
  virsh    a domain of the same definition that Tashi knows nothing about,
           moved with `virsh migrate --live --p2p --tls --xml DEST.xml` run
           beside the source's libvirtd (its mount and network namespaces):
           the flags the NM's send uses (nm/libvirt/migration.py flags_for:
           LIVE | PEER2PEER | TLS over qemu+tls://) and, like the NM, a
           destination XML pointing its console at the target's file (made by
           the same function, domain_xml.retarget); total: the virsh command,
           its start and its connection to the daemon included.
  api      the same domain moved by the call the NM's send makes,
           virDomainMigrateToURI3 with the same flags and destination XML, on
           a connection to the source's daemon held open (as the NM holds
           one): libvirt's floor, without virsh's start and connection.

Why a second domain rather than virsh on Tashi's own: moving Tashi's domain
behind the CM's back makes the source's NM report it gone and the target's NM
adopt it (it carries Tashi's metadata), which changes the CM's view and the
state of the instance between rounds.  The second domain is Tashi's own
domain XML (same machine type, CPU model, devices, memory, kernel, initrd and
command line) without Tashi's metadata, under another name: no NM adopts it,
and the guest and its definition are the same as the one Tashi moves.

Downtime (the guest paused at the switch-over) and libvirt's own elapsed time
for the migration job, both in ms, come from the completed job's statistics,
virDomainGetJobStats(VIR_DOMAIN_JOB_STATS_COMPLETED | ..._KEEP_COMPLETED),
read on the target host's daemon through its unix socket (`local_uri`) right
after each migration: libvirt 9.0 keeps them on the incoming side (the source
has no domain left to ask) until read without KEEP_COMPLETED or until the next
job; Tashi's NM never reads them, so the bench finds them intact for both.

Printed: p50 and max of total time and downtime for each way, libvirt's
elapsed p50, and the ratios Tashi / virsh and Tashi / api (the aim: Tashi
adds at most 20% to libvirt's own total time and nothing to the downtime).  At the end both
guests must still be in their first boot and ticking.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from tashi.nm.libvirt import domain_xml as dx
from tashi.runtime.client import EventStream
from tashi.v1 import resources_pb2 as pb
from tests.guests import GUEST_UP
from tests.harness import wait_for
from tests.twohost_cluster import RUNNING, TICK, TwoHostCluster
from tests.twohosts import Hypervisor

STATS = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
ALONE = "bench-libvirt"  # the domain Tashi does not know


class Row:
    """One migration: total seconds as its caller saw them, libvirt's ms."""

    def __init__(self, total: float, stats: dict[str, int]) -> None:
        self.total = total
        self.downtime = stats["downtime"]
        self.elapsed = stats["time_elapsed"]


def completed_stats(conn: libvirt.virConnect, name: str) -> dict[str, int]:
    stats = conn.lookupByName(name).jobStats(STATS)
    if "downtime" not in stats:
        raise RuntimeError(f"no completed migration job recorded for {name}: {stats}")
    return stats


class RunningSeen:
    """When the client first sees each (instance, host) Running on the CM's stream."""

    def __init__(self, c: TwoHostCluster) -> None:
        _items, since, _hi = c.client.list_instances_at(page_size=1)
        self.stream: EventStream = c.client.watch_events(since)
        self.cond = threading.Condition()
        self.seen: list[tuple[float, int, str]] = []  # (when, instance id, host name)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for events in self.stream:
                now = time.perf_counter()
                with self.cond:
                    for ev in events:
                        inst = ev.instance if ev.HasField("instance") else None
                        if inst is not None and inst.status.state == RUNNING:
                            self.seen.append((now, inst.id, inst.status.host_name))
                    self.cond.notify_all()
        except Exception:  # the stream ends when the CM stops or it is cancelled
            return

    def mark(self) -> int:
        with self.cond:
            return len(self.seen)

    def wait(self, after: int, iid: int, host: str, timeout: float = 90.0) -> float:
        def found() -> float | None:
            return next((t for t, i, h in self.seen[after:] if i == iid and h == host), None)
        with self.cond:
            if not self.cond.wait_for(lambda: found() is not None, timeout=timeout):
                raise TimeoutError(f"instance {iid} never Running on {host}")
            return found()  # type: ignore[return-value]

    def close(self) -> None:
        self.stream.cancel()


class Bench:
    def __init__(self, c: TwoHostCluster, work: Path, memory_mib: int) -> None:
        self.c = c
        self.hv = {h.name: h for h in c.pair.hosts}
        self.conns = {name: libvirt.open(h.local_uri) for name, h in self.hv.items()}
        self.inst = c.boot("bench", "hosta", memory_mib=memory_mib)
        self.watch = RunningSeen(c)
        self.rows: dict[str, list[Row]] = {"tashi": [], "virsh": [], "api": []}
        # The libvirt-alone guest: Tashi's domain XML, minus Tashi, under another name.
        self.alone_dir = work / "libvirt-alone"
        self.alone_dir.mkdir()
        dom = ET.fromstring(self.conns["hosta"].lookupByName(dx.vm_name(self.inst.id))
                            .XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
        for tag in ("metadata", "uuid"):
            for el in dom.findall(tag):
                dom.remove(el)
        name_el = dom.find("name")
        assert name_el is not None
        name_el.text = ALONE
        xml = dx.retarget(ET.tostring(dom, encoding="unicode"), (), "", "",
                          str(self.console_of("hosta")))
        self.conns["hosta"].createXML(xml, 0)
        self.alone_here = "hosta"
        wait_for(lambda: GUEST_UP in self.console_of("hosta").read_text(errors="replace")
                 if self.console_of("hosta").exists() else False, 60,
                 what=f"{ALONE} booted")

    def console_of(self, host: str) -> Path:
        return self.alone_dir / f"{host}-console.log"

    def alone_tick(self, host: str) -> int:
        path = self.console_of(host)
        found = TICK.findall(path.read_text(errors="replace")) if path.exists() else []
        return int(found[-1]) if found else 0

    def tashi_move(self, to: str) -> None:
        mark = self.watch.mark()
        start = time.perf_counter()
        self.c.client.migrate_instance(self.inst.id, to)
        total = self.watch.wait(mark, self.inst.id, to) - start
        stats = completed_stats(self.conns[to], dx.vm_name(self.inst.id))
        self.rows["tashi"].append(Row(total, stats))
        seen = self.c.ticks_on(to, self.inst.id)
        wait_for(lambda: self.c.ticks_on(to, self.inst.id) > seen, 20,
                 what=f"the Tashi guest ticks on {to}")

    def dest_xml(self, to: str) -> str:
        """As the NM's send makes it: the running domain's XML, retargeted."""
        xml = self.conns[self.alone_here].lookupByName(ALONE).XMLDesc(
            libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        return dx.retarget(xml, (), "", "", str(self.console_of(to)))

    def virsh_move(self, to: str) -> None:
        source: Hypervisor = self.hv[self.alone_here]
        dest_xml = self.alone_dir / "dest.xml"
        start = time.perf_counter()
        dest_xml.write_text(self.dest_xml(to))
        proc = subprocess.run(source.enter() + [
            "virsh", "-c", "qemu:///system", "migrate", "--live", "--p2p", "--tls",
            "--xml", str(dest_xml), ALONE, self.hv[to].uri],
            capture_output=True, text=True, timeout=120)
        total = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"virsh migrate to {to} failed: {proc.stderr.strip()}")
        self.arrived("virsh", to, total)

    def api_move(self, to: str) -> None:
        start = time.perf_counter()
        params = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: self.dest_xml(to)}
        self.conns[self.alone_here].lookupByName(ALONE).migrateToURI3(
            self.hv[to].uri, params, libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_TLS)
        self.arrived("api", to, time.perf_counter() - start)

    def arrived(self, way: str, to: str, total: float) -> None:
        self.alone_here = to
        self.rows[way].append(Row(total, completed_stats(self.conns[to], ALONE)))
        seen = self.alone_tick(to)
        wait_for(lambda: self.alone_tick(to) > seen, 20, what=f"{ALONE} ticks on {to}")

    def check(self) -> None:
        """Both guests: their first boot still, still ticking where they were sent."""
        if self.c.console(self.inst.id).count(GUEST_UP) != 1:
            raise RuntimeError("the Tashi guest rebooted")
        got = self.c.client.get_instance(self.inst.id)
        if got.status.state != RUNNING or got.status.host_name != "hosta":
            raise RuntimeError(f"the Tashi guest is {pb.InstanceState.Name(got.status.state)} "
                               f"on {got.status.host_name}")
        alone = "".join(self.console_of(h).read_text(errors="replace")
                        for h in self.hv if self.console_of(h).exists())
        if alone.count(GUEST_UP) != 1:
            raise RuntimeError(f"{ALONE} rebooted")
        for tick in (lambda: self.c.ticks_on("hosta", self.inst.id),
                     lambda: self.alone_tick(self.alone_here)):
            seen = tick()
            wait_for(lambda tick=tick, seen=seen: tick() > seen, 10,  # type: ignore[misc]
                     what="ticking at the end")

    def close(self) -> None:
        self.watch.close()
        try:
            self.conns[self.alone_here].lookupByName(ALONE).destroy()
        except libvirt.libvirtError:
            pass  # gone already
        for conn in self.conns.values():
            conn.close()


def report(rows: dict[str, list[Row]]) -> None:
    print(f"{'way':8} {'n':>3} {'total p50':>10} {'max':>8} {'downtime p50':>13} {'max':>6} "
          f"{'libvirt elapsed p50':>20}")
    for way, got in rows.items():
        total = [r.total * 1000 for r in got]
        down = [r.downtime for r in got]
        print(f"{way:8} {len(got):3d} {statistics.median(total):8.0f}ms "
              f"{max(total):6.0f}ms {statistics.median(down):11.0f}ms {max(down):4.0f}ms "
              f"{statistics.median(r.elapsed for r in got):18.0f}ms")

    def p50_max(values: list[float]) -> tuple[float, float]:
        return statistics.median(values), max(values)

    def ratio(f: tuple[float, float], g: tuple[float, float]) -> str:
        return f"{f[0] / g[0]:.2f} p50, {f[1] / g[1]:.2f} max" if g[0] and g[1] else "n/a"

    total_t = p50_max([r.total for r in rows["tashi"]])
    down_t = p50_max([float(r.downtime) for r in rows["tashi"]])
    for way in ("virsh", "api"):
        total_v = p50_max([r.total for r in rows[way]])
        down_v = p50_max([float(r.downtime) for r in rows[way]])
        print(f"tashi / {way + ':':6} total {ratio(total_t, total_v)} "
              f"({(total_t[0] - total_v[0]) * 1000:+.0f} ms p50); downtime "
              f"{ratio(down_t, down_v)} ({down_t[0] - down_v[0]:+.0f} ms p50)")
    print("aim (the issue): total ratio <= 1.20, downtime ratio 1.00 (the switch-over is "
          "libvirt's and QEMU's alone: the NM asks for the same migration)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5,
                    help="round trips hosta -> hostb -> hosta per way (default 5)")
    ap.add_argument("--memory", type=int, default=128, help="guest memory, MiB (default 128)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (private namespaces for the two libvirtds)", file=sys.stderr)
        return 2
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors raise; no echo
    with tempfile.TemporaryDirectory(prefix="bench-migration-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        c = TwoHostCluster.start(work / "cluster")
        bench: Bench | None = None
        try:
            print(f"two hosts and the Tashi stack up in {time.perf_counter() - started:.1f}s; "
                  f"two idle {a.memory} MiB TCG guests, {os.cpu_count()} cores, "
                  f"{a.rounds} round trips each way")
            bench = Bench(c, work, a.memory)
            for _ in range(a.rounds):  # each way goes there and back once a round
                bench.tashi_move("hostb")
                bench.virsh_move("hostb")
                bench.api_move("hosta")
                bench.tashi_move("hosta")
                bench.api_move("hostb")
                bench.virsh_move("hosta")
            bench.check()
            rows = bench.rows
        finally:
            try:
                if bench is not None:
                    bench.close()
            finally:
                c.stop()
    report(rows)
    print(f"whole run {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
