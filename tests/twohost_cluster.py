"""The whole Tashi stack on two real hosts of this machine: a CM, a scheduler and
one NM per host of a `tests.twohosts.HostPair`, every service over mutual TLS
with one site CA (which also signs the libvirt daemons' certificates), an image
store both hosts see holding the counting test guest.  Used by the two-host
tests, `tools/two_host_demo.py` and `bench/bench_migration.py`."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tashi.runtime.client import ClusterClient
from tashi.v1 import resources_pb2 as pb
from tests.guests import CMDLINE, GUEST_UP, guest_files
from tests.harness import (
    CMProcess,
    NMProcess,
    Process,
    SchedulerProcess,
    Site,
    start_cm,
    stop_all,
    wait_for,
    wait_state,
)
from tests.twohosts import HostPair

RUNNING = pb.INSTANCE_STATE_RUNNING
TICK = re.compile(r"^tick (\d+)", re.M)
HOSTS = ("hosta", "hostb")


@dataclass
class TwoHostCluster:
    pair: HostPair
    cm: CMProcess
    client: ClusterClient
    images: Path
    site: Site
    workdir: Path
    nms: dict[str, NMProcess] = field(default_factory=dict)
    others: list[Process] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, **cm_flags: object) -> TwoHostCluster:
        """Both hosts, the CM (`cm_flags` become its flags), both NMs and the scheduler."""
        site = Site(workdir / "ca")
        images = workdir / "images"  # the image store both hosts see
        images.mkdir(parents=True)
        guest_files(images)
        (images / "disk").mkdir()
        guest_files(images / "disk", disk_ticks=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "base.qcow2"),
                        "16M"], check=True)
        pair = HostPair(workdir / "pair", ca=site.dir)
        c: TwoHostCluster | None = None
        try:
            cm = start_cm(workdir, site=site, images=str(images), **cm_flags)
            c = cls(pair, cm, cm.client(), images, site, workdir)
            for name in HOSTS:
                c.client.create_host(name)
                c.start_nm(name)
            c.others.append(SchedulerProcess(workdir, cm.address, site=site))
            return c
        except BaseException:
            if c is not None:
                c.stop()  # whatever of it started
            else:
                pair.stop()
            raise

    def stop(self) -> None:
        stop_all(*self.others, *self.nms.values(), self.cm)
        self.pair.stop()

    def start_nm(self, name: str, migration_uri: str = "") -> NMProcess:
        hv = self.pair.a if name == "hosta" else self.pair.b
        old = self.nms.pop(name, None)
        if old is not None:
            old.stop()
        nm = NMProcess(self.workdir / name, self.cm.address, name, site=self.site,
                       libvirt_uri=hv.local_uri, images=self.images, heartbeat_seconds=0.5,
                       extra=["--migration-uri", migration_uri or hv.uri,
                              "--cpu-ratio", "4"])  # 2 cores here: room for 3 guests
        self.nms[name] = nm
        uri = migration_uri or hv.uri
        wait_for(lambda: (h := self.client.get_host(name)).up
                 and h.capabilities.migration_uri == uri, 30, what=f"{name} registered")
        return nm

    def console_path(self, host: str, iid: int) -> Path:
        return self.nms[host].state_dir / "console" / f"tashi-{iid}.log"

    def console(self, iid: int) -> str:
        """The guest's serial console, as the NMs of both hosts logged it."""
        return "".join(self.console_path(h, iid).read_text(errors="replace")
                       for h in self.nms if self.console_path(h, iid).exists())

    def ticks_on(self, host: str, iid: int) -> int:
        path = self.console_path(host, iid)
        found = TICK.findall(path.read_text(errors="replace")) if path.exists() else []
        return int(found[-1]) if found else 0

    def boot(self, name: str, host: str, disk: str = "", memory_mib: int = 128) -> pb.Instance:
        """A counting guest on `host`; with a `disk`, one that also writes each tick
        to the disk's first sector."""
        hints = {"kernel": "vmlinuz", "initrd": "disk/initrd.gz" if disk else "initrd.gz",
                 "cmdline": CMDLINE, "targetHost": host}
        disks = [pb.Disk(uri=disk)] if disk else []
        [inst] = self.client.create_instances(pb.Instance(name=name, spec=pb.InstanceSpec(
            cores=1, memory_mib=memory_mib, hints=hints, disks=disks)))
        wait_state(self.client, inst.id, RUNNING, timeout=60)
        wait_for(lambda: GUEST_UP in self.console(inst.id), 60, what=f"{name} booted")
        return self.client.get_instance(inst.id)

    def host_of(self, iid: int) -> str:
        return self.client.get_instance(iid).status.host_name

    def migrate(self, iid: int, to: str, timeout: float = 90.0) -> None:
        self.client.migrate_instance(iid, to)
        wait_for(lambda: (i := self.client.get_instance(iid)).status.state == RUNNING
                 and i.status.host_name == to, timeout, what=f"instance {iid} running on {to}")
