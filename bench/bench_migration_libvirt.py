"""Live migration between two real libvirtd daemons on this machine, measured in one run.

    python -m bench.bench_migration_libvirt [--rounds 10] [--memory 128] [--no-disk]

(as root, from the repository root or anywhere: the repository is put on the path.)

The two hypervisors are tests/twohosts.py's HostPair: private libvirtds in one
private network namespace, libvirt's TLS transport authenticated by a site CA.
A counting TCG guest (tests/guests.py) migrates back and forth
(virDomainMigrateToURI3, VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER), `--rounds`
times in each mode, the modes taking turns round by round so that machine
noise falls on all of them:

  tls+tls   qemu+tls:// control, QEMU's stream over TLS too (VIR_MIGRATE_TLS)
  tls       qemu+tls:// control, QEMU's stream in the clear
  tcp       qemu+tcp:// control (no authentication), stream in the clear

then (unless --no-disk) a guest on a qcow2 overlay local to its host, moved
with VIR_MIGRATE_NON_SHARED_INC | VIR_MIGRATE_TLS (`inc+tls`), a fresh overlay
over the same base precreated on the target before each move (the overlay
holds 1 MiB written on the first host and the sector the guest rewrites each
second).

Per migration: the wall time of the call, libvirt's `time_elapsed` and
`downtime` (the guest paused at the switch-over), both in ms from
virDomainGetJobStats(VIR_DOMAIN_JOB_STATS_COMPLETED) on the destination (the
source has no domain left to ask), and the bytes sent.  The guest is idle but
for its tick: a busy guest's downtime would be larger.  At the end each guest
must still be in its first boot and ticking.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import libvirt

from tests.guests import CMDLINE, GUEST_UP, guest_files
from tests.twohosts import IMAGES, HostPair, Hypervisor, console_log, guest_xml

BASE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
MODES = {"tls+tls": ("uri", BASE | libvirt.VIR_MIGRATE_TLS),
         "tls": ("uri", BASE),
         "tcp": ("tcp_uri", BASE)}
INC = ("uri", BASE | libvirt.VIR_MIGRATE_TLS | libvirt.VIR_MIGRATE_NON_SHARED_INC)


def last_tick(host: Hypervisor, name: str) -> int:
    found = re.findall(r"^tick (\d+)$", console_log(host, name), re.M)
    return int(found[-1]) if found else 0


def wait_ticks(host: Hypervisor, name: str, above: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (n := last_tick(host, name)) <= above:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} does not tick on {host.name}")
        time.sleep(0.1)
    return n


class Guest:
    """One guest and where it runs; `move` migrates it to the other host and records."""

    def __init__(self, pair: HostPair, conns: dict[str, libvirt.virConnect], name: str,
                 xml: str) -> None:
        self.pair, self.conns, self.name = pair, conns, name
        self.here = pair.a
        self.dom = conns["hosta"].createXML(xml, 0)
        wait_ticks(self.here, name, 1)
        self.rows: dict[str, list[tuple[float, int, int, int]]] = {}

    def there(self) -> Hypervisor:
        return self.pair.b if self.here is self.pair.a else self.pair.a

    def move(self, mode: str, uri_attr: str, flags: int) -> None:
        target = self.there()
        start = time.perf_counter()
        self.dom.migrateToURI3(getattr(target, uri_attr), {}, flags)
        wall = time.perf_counter() - start
        self.here = target
        self.dom = self.conns[target.name].lookupByName(self.name)
        stats = self.dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        self.rows.setdefault(mode, []).append(
            (wall, stats["time_elapsed"], stats["downtime"], stats["data_processed"]))

    def check(self) -> None:
        """Still the first boot, still ticking, on the host it was last sent to."""
        boots = sum(console_log(h, self.name).count(GUEST_UP) for h in self.pair.hosts)
        if boots != 1:
            raise RuntimeError(f"{self.name} booted {boots} times")
        wait_ticks(self.here, self.name, last_tick(self.here, self.name), timeout=10)

    def destroy(self) -> None:
        try:
            self.dom.destroy()
        except libvirt.libvirtError:
            pass  # gone already (a transient domain vanishes when destroyed)


def precreate_overlay(target: Hypervisor, base: str, overlay: str) -> None:
    target.outside(overlay).unlink(missing_ok=True)  # a stale one from an earlier stay
    target.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)


def report(rows: dict[str, list[tuple[float, int, int, int]]]) -> None:
    print(f"{'mode':9} {'n':>3} {'wall p50':>9} {'max':>7} {'elapsed p50':>12} {'max':>6} "
          f"{'downtime p50':>13} {'max':>5} {'MiB sent p50':>13}")
    for mode, got in rows.items():
        wall = [r[0] * 1000 for r in got]
        elapsed, down = [r[1] for r in got], [r[2] for r in got]
        sent = statistics.median(r[3] for r in got) / (1 << 20)
        print(f"{mode:9} {len(got):3d} {statistics.median(wall):7.0f}ms {max(wall):5.0f}ms "
              f"{statistics.median(elapsed):10.0f}ms {max(elapsed):4.0f}ms "
              f"{statistics.median(down):11.0f}ms {max(down):3.0f}ms {sent:13.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="migrations per mode (default 10)")
    ap.add_argument("--memory", type=int, default=128, help="guest memory, MiB (default 128)")
    ap.add_argument("--no-disk", action="store_true", help="skip the non-shared-storage part")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (private namespaces for the two libvirtds)", file=sys.stderr)
        return 2
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors raise; no echo
    with tempfile.TemporaryDirectory(prefix="bench-migration-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        pair = HostPair(work / "pair", tcp=True, tls_data_required=False)
        print(f"two libvirtds up in {time.perf_counter() - started:.1f}s "
              f"({pair.a.uri}, {pair.b.uri}); guest {a.memory} MiB, TCG, "
              f"{os.cpu_count()} cores")
        conns: dict[str, libvirt.virConnect] = {}
        guests: list[Guest] = []
        try:
            conns.update({h.name: libvirt.open(h.local_uri) for h in pair.hosts})
            kernel, initrd = guest_files(work)
            g = Guest(pair, conns, "bench", guest_xml("bench", kernel, initrd, CMDLINE,
                                                      memory_mib=a.memory))
            guests.append(g)
            for _ in range(a.rounds):
                for mode, (uri_attr, flags) in MODES.items():
                    g.move(mode, uri_attr, flags)
            g.check()
            rows = dict(g.rows)
            g.destroy()
            if not a.no_disk:
                disk_dir = work / "disk"
                disk_dir.mkdir()
                dkernel, dinitrd = guest_files(disk_dir, disk_ticks=True)
                base, overlay = f"{IMAGES}/bench-base.qcow2", f"{IMAGES}/bench-disk.qcow2"
                pair.a.run("qemu-img", "create", "-q", "-f", "qcow2", base, "64M")
                pair.b.outside(base).write_bytes(pair.a.outside(base).read_bytes())
                precreate_overlay(pair.a, base, overlay)
                pair.a.run("qemu-io", "-c", "write -q -P 0xa5 1M 1M", overlay)
                d = Guest(pair, conns, "bench-disk",
                          guest_xml("bench-disk", dkernel, dinitrd, CMDLINE,
                                    memory_mib=a.memory, disk=overlay))
                guests.append(d)
                for _ in range(a.rounds):
                    precreate_overlay(d.there(), base, overlay)
                    d.move("inc+tls", *INC)
                d.check()
                rows.update(d.rows)
                d.destroy()
        finally:
            try:
                for guest in guests:
                    guest.destroy()
                for conn in conns.values():
                    conn.close()
            finally:
                pair.stop()
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
