"""Node manager figures, all measured in one run.

    python -m bench.bench_nm [--vms 500] [--hosts 4] [--guests 10] [--no-guest]

(run from the repository root, as root for the real-guest part.)

1. create -> Running through a real `tashi-cm`, `tashi-scheduler` and
   `tashi-nm`s on libvirt's test driver: each VM is created alone and timed
   from the CreateInstance call until the CM's event stream shows it Running;
   p50 and p99 beside the floor, a direct libvirt define + start (and the
   transient createXML the NM uses) of the same domain XML on the same driver.
2. A real TCG guest (Debian's cloud kernel + busybox initramfs, as in
   tests/nm/test_real_guest.py) on a private libvirtd: CreateInstance ->
   Running and CreateInstance -> the guest's first line, against a bare
   `qemu-system-x86_64 -kernel ...` boot to the same line (medians).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import libvirt

from tashi.nm.libvirt import domain_xml as dx
from tashi.runtime.auth import user_metadata
from tashi.runtime.client import ClusterClient
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb
from tests.guests import CMDLINE, GUEST_UP, PrivateLibvirt, guest_files
from tests.harness import CMProcess, NMProcess, Process, bin_path, node_xml, start_cm, wait_for


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ms(v: float) -> str:
    return f"{v * 1000:7.1f} ms"


class RunningWatch:
    """Times when each instance is first seen Running on the CM's event stream."""

    def __init__(self, client: ClusterClient) -> None:
        self.client = client
        self.seen: dict[int, float] = {}
        self.cond = threading.Condition()
        since = client.last_seq()
        self.stream = client.cm.WatchEvents(cmpb.WatchEventsRequest(since=since),
                                            metadata=user_metadata(client.user))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for resp in self.stream:
                now = time.perf_counter()
                with self.cond:
                    for ev in resp.events:
                        if (ev.HasField("instance")
                                and ev.instance.status.state == pb.INSTANCE_STATE_RUNNING):
                            self.seen.setdefault(ev.instance.id, now)
                    self.cond.notify_all()
        except Exception:  # the stream ends when the CM stops
            return

    def wait(self, iid: int, timeout: float = 60.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: iid in self.seen, timeout=timeout):
                raise TimeoutError(f"instance {iid} never ran")
            return self.seen[iid]

    def close(self) -> None:
        self.stream.cancel()


class SchedulerProcess:
    """tashi-scheduler prints nothing when ready; it is ready once it runs."""

    def __init__(self, tmp: Path, cm: CMProcess) -> None:
        self._log = open(tmp / "scheduler.log", "ab")
        self.proc = subprocess.Popen([bin_path("tashi-scheduler"), "--cm", cm.address,
                                      "--log-level", "WARNING"],
                                     stdout=self._log, stderr=self._log)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def floor(tmp: Path, n: int) -> tuple[list[float], list[float]]:
    """Direct libvirt on the test driver: define+start and createXML, per domain."""
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open("test://" + str(node_xml(tmp / "floor.xml", 1024, 1 << 20)))
    define: list[float] = []
    create: list[float] = []
    for i in range(n):
        for kind, out in (("d", define), ("c", create)):
            meta = dx.TashiMetadata(instance_id=i + 1, owner="bench", name=f"{kind}{i}",
                                    cores=1, memory_mib=64)
            xml = dx.build(dx.DomainConfig(name=f"{kind}-{i}", domain_type="qemu",
                                           memory_mib=64, vcpus=1, metadata=meta))
            t0 = time.perf_counter()
            if kind == "d":
                conn.defineXML(xml).create()
            else:
                conn.createXML(xml, 0)
            out.append(time.perf_counter() - t0)
    conn.close()
    return define, create


def through_tashi(tmp: Path, n: int, hosts: int) -> list[float]:
    images = tmp / "images"
    images.mkdir()
    procs: list[Process | SchedulerProcess] = []
    try:
        cm = start_cm(tmp, images=str(images), log_level="WARNING")
        procs.append(cm)
        client = cm.client()
        cores = max(8, -(-n // hosts) + 8)
        for h in range(hosts):
            client.create_host(f"h{h}")
            procs.append(NMProcess(tmp / f"h{h}", cm.address, f"h{h}", images=images,
                                   cores=cores, memory_mib=cores * 128,
                                   extra=["--log-level", "WARNING"]))
        wait_for(lambda: all(h.up for h in client.list_hosts()), what="hosts up")
        procs.append(SchedulerProcess(tmp, cm))
        watch = RunningWatch(client)
        lat: list[float] = []
        for i in range(n):
            t0 = time.perf_counter()
            inst = client.create_instances(
                pb.Instance(name=f"b{i}", spec=pb.InstanceSpec(cores=1, memory_mib=64)))[0]
            lat.append(watch.wait(inst.id) - t0)
        watch.close()
        client.close()
        return lat
    finally:
        for p in reversed(procs):
            p.stop()


def bare_boot(images: Path) -> float:
    """qemu-system-x86_64 (TCG) spawned until the guest's first line on its serial port."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "accel=tcg", "-m", "192", "-nographic",
         "-no-reboot", "-nodefaults", "-serial", "stdio", "-kernel", str(images / "vmlinuz"),
         "-initrd", str(images / "initrd.gz"), "-append", CMDLINE],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    buf = b""
    try:
        while GUEST_UP.encode() not in buf:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("bare guest exited before booting")
            buf += chunk
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


def real_guest(tmp: Path, guests: int) -> tuple[list[float], list[float], list[float]]:
    images = tmp / "gimages"
    images.mkdir()
    guest_files(images)
    bare = [bare_boot(images) for _ in range(guests)]
    lv = PrivateLibvirt(tmp / "libvirt")
    procs: list[Process | SchedulerProcess] = []
    running: list[float] = []
    up: list[float] = []
    (tmp / "g").mkdir()
    try:
        cm = start_cm(tmp / "g", images=str(images), log_level="WARNING")
        procs.append(cm)
        client = cm.client()
        client.create_host("g1")
        nm = NMProcess(tmp / "gnm", cm.address, "g1", libvirt_uri="qemu:///system",
                       images=images, prefix=lv.enter(), extra=["--log-level", "WARNING"])
        procs.append(nm)
        wait_for(lambda: client.get_host("g1").up, what="g1 up")
        procs.append(SchedulerProcess(tmp / "g", cm))
        watch = RunningWatch(client)
        for i in range(guests):
            t0 = time.perf_counter()
            inst = client.create_instances(pb.Instance(
                name=f"tiny{i}", spec=pb.InstanceSpec(
                    cores=1, memory_mib=192,
                    hints={"kernel": "vmlinuz", "initrd": "initrd.gz", "cmdline": CMDLINE})))[0]
            running.append(watch.wait(inst.id) - t0)
            log = nm.state_dir / "console" / f"{dx.vm_name(inst.id)}.log"
            while not (log.exists() and GUEST_UP in log.read_text(errors="replace")):
                time.sleep(0.005)
            up.append(time.perf_counter() - t0)
            client.instance_action("Delete", inst.id)
            wait_for(lambda: not lv.guest_pids(), what="guest gone")
        watch.close()
        client.close()
    finally:
        for p in reversed(procs):
            p.stop()
        lv.stop()
    return bare, running, up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vms", type=int, default=500)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--guests", type=int, default=10,
                    help="real guests booted each way (a median of 3 said little)")
    ap.add_argument("--no-guest", action="store_true", help="skip the real TCG guest")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-nm-") as d:
        tmp = Path(d)
        define, create = floor(tmp, args.vms)
        lat = through_tashi(tmp, args.vms, args.hosts)
        p50, p99 = pct(lat, 50), pct(lat, 99)
        print(f"create -> Running, {args.vms} VMs one at a time, CM + scheduler + "
              f"{args.hosts} NMs (libvirt test driver)")
        print(f"  through Tashi          p50 {ms(p50)}   p99 {ms(p99)}   (targets 30 / 150 ms)")
        print(f"  libvirt define+start   p50 {ms(pct(define, 50))}   p99 {ms(pct(define, 99))}")
        print(f"  libvirt createXML      p50 {ms(pct(create, 50))}   p99 {ms(pct(create, 99))}")
        print(f"  ratio p50 Tashi / define+start: {p50 / pct(define, 50):.0f}x")
        if args.no_guest:
            return
        if os.geteuid() != 0:
            print("real guest: skipped (needs root for the private libvirtd)")
            return
        bare, running, up = real_guest(tmp, args.guests)
        b, r, u = (statistics.median(x) for x in (bare, running, up))

        def spread(xs: list[float]) -> str:
            q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
            return f"(quartiles {q[0]:.2f}-{q[2]:.2f}, min {min(xs):.2f}, max {max(xs):.2f})"

        print(f"real TCG guest (median of {args.guests} each way)")
        print(f"  bare qemu boot to first guest line       {b:6.2f} s   {spread(bare)}")
        print(f"  Tashi create -> Running (CM)             {r:6.2f} s   {spread(running)}")
        print(f"  Tashi create -> first guest line         {u:6.2f} s   {spread(up)}")
        print(f"  Tashi over bare (medians)               +{u - b:.2f} s   (target <= 0.5 s)")


if __name__ == "__main__":
    main()
