"""Live migration on two real hosts of this machine, shown as it happens.

    python -m tools.two_host_demo [--rounds 4] [--pause 3]

(as root: each host is a private libvirtd in its own namespaces.)

Starts, in a scratch directory, tests/twohost_cluster.py's TwoHostCluster: two
libvirt daemons, hosta and hostb, each in its own mount namespace with its own
host UUID and node certificate, sharing a private network namespace and
migrating over libvirt's TLS transport (the memory stream over TLS too); on
them the whole Tashi stack over mutual TLS: a cluster manager, a scheduler and
one node manager per host.  Boots a counting guest (a TCG VM whose serial
console prints `tick N` every second) on hosta, then live-migrates it to the
other host and back, `--rounds` migrations in all, printing twice a second
its latest tick, where the CM says it is and which host runs its QEMU
process, and a line per migration with how long it took.  The count never
restarts: the same boot goes on, on the other host.  Then, or on Ctrl-C,
it stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from tashi.v1 import resources_pb2 as pb
from tests.guests import GUEST_UP
from tests.twohost_cluster import HOSTS, RUNNING, TwoHostCluster

CHILD_ENV = "TASHI_TWO_HOST_DEMO_CHILD"


class Show:
    """Prints the guest's state every half second."""

    def __init__(self, c: TwoHostCluster, iid: int, t0: float) -> None:
        self.c, self.iid, self.t0 = c, iid, t0
        self.hv = {h.name: h for h in c.pair.hosts}

    def line(self) -> None:
        inst = self.c.client.get_instance(self.iid)
        ticks = {h: self.c.ticks_on(h, self.iid) for h in HOSTS}
        console = max(ticks, key=lambda h: ticks[h])
        qemu = ", ".join(f"{h} {len(self.hv[h].guest_pids())}" for h in HOSTS)
        state = pb.InstanceState.Name(inst.status.state).removeprefix("INSTANCE_STATE_")
        print(f"  {time.monotonic() - self.t0:6.1f}s  tick {ticks[console]:4d} "
              f"(console on {console})  CM: {state:<14} on {inst.status.host_name:<6} "
              f"QEMU processes: {qemu}", flush=True)

    def for_seconds(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            time.sleep(0.5)
            self.line()


class Interrupt:
    """Ctrl-C (or SIGTERM) raises KeyboardInterrupt only while armed: start-up and
    stopping run to their end, so nothing is left half-started or half-stopped."""

    def __init__(self) -> None:
        self.asked = False
        self.armed = False
        signal.signal(signal.SIGINT, self.handler)
        signal.signal(signal.SIGTERM, self.handler)

    def handler(self, _sig: int, _frame: FrameType | None) -> None:
        if not self.asked:
            print("\nCtrl-C: stopping" + ("" if self.armed else " once start-up is done"),
                  flush=True)
        self.asked = True
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt

    def arm(self) -> None:
        self.armed = True
        if self.asked:
            self.armed = False
            raise KeyboardInterrupt


def demo(rounds: int, pause: float, interrupt: Interrupt) -> None:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tashi-two-host-demo-") as tmp:
        print("starting two libvirt daemons (hosta, hostb) and Tashi on them "
              f"(CM, scheduler, one NM per host, mutual TLS) in {tmp} ...", flush=True)
        c = TwoHostCluster.start(Path(tmp))
        try:
            interrupt.arm()
            print(f"up in {time.monotonic() - t0:.1f}s: hosta at {c.pair.a.uri}, "
                  f"hostb at {c.pair.b.uri}; CM on {c.cm.address}", flush=True)
            start = time.monotonic()
            inst = c.boot("counter", "hosta")
            print(f"booted instance {inst.id} ('counter', 128 MiB, 1 core, libvirt domain "
                  f"tashi-{inst.id}) on hosta in {time.monotonic() - start:.1f}s", flush=True)
            show = Show(c, inst.id, t0)
            show.for_seconds(pause)
            here = "hosta"
            for n in range(1, rounds + 1):
                to = "hostb" if here == "hosta" else "hosta"
                print(f"migration {n}/{rounds}: {here} -> {to} (MigrateInstance)", flush=True)
                start = time.monotonic()
                c.client.migrate_instance(inst.id, to)
                shown = start
                while True:  # the CM's view every 0.1 s, a line every 0.5 s
                    got = c.client.get_instance(inst.id)
                    took = time.monotonic() - start
                    if got.status.state == RUNNING and got.status.host_name == to:
                        break
                    if got.status.state == RUNNING and got.status.reason:
                        raise RuntimeError(f"the migration failed: {got.status.reason}")
                    if took > 90:
                        raise RuntimeError(f"not Running on {to} after 90s")
                    if time.monotonic() - shown >= 0.5:
                        show.line()
                        shown = time.monotonic()
                    time.sleep(0.1)
                show.line()
                print(f"migration {n}/{rounds}: Running on {to} {took:.1f}s after the call, "
                      "ticking on", flush=True)
                here = to
                show.for_seconds(pause)
            boots = c.console(inst.id).count(GUEST_UP)
            print(f"done: {rounds} live migrations, the guest booted {boots} time(s) and counted "
                  f"to {max(c.ticks_on(h, inst.id) for h in HOSTS)}", flush=True)
        finally:
            interrupt.armed = False
            print("stopping everything ...", flush=True)
            c.stop()
            print("stopped", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4, help="live migrations (default 4)")
    ap.add_argument("--pause", type=float, default=3.0,
                    help="seconds to watch it count between migrations (default 3)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("two_host_demo needs root: each host is a libvirtd in private namespaces "
              "(unshare, nsenter, mounts)", file=sys.stderr)
        return 1
    if os.environ.get(CHILD_ENV) != "1":
        # Run the demo in a session of its own, so that a Ctrl-C at the terminal (SIGINT to
        # the whole foreground process group) reaches only this process, which passes it
        # on: the daemons and services are then stopped in order, none killed half-way.
        child = subprocess.Popen([sys.executable, "-m", "tools.two_host_demo", *sys.argv[1:]],
                                 start_new_session=True,
                                 env={**os.environ, CHILD_ENV: "1"})

        def forward(sig: int, _frame: FrameType | None) -> None:
            child.send_signal(signal.SIGTERM)
        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        return child.wait()
    try:
        demo(a.rounds, a.pause, Interrupt())
    except KeyboardInterrupt:
        print("interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
