"""A real Linux guest under QEMU (TCG) driven through a real CM and NM.

The guest (Debian's cloud kernel + a busybox initramfs) boots, is paused,
unpaused, suspended to a file and resumed (the same boot goes on: it says
TASHI-GUEST-UP once), survives a SIGKILLed NM (Orphaned in the CM, re-adopted
by the restarted NM, never duplicated), and powers itself off on ShutdownVm's
ACPI button press.  Every process started here is stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.v1 import node_manager_pb2 as nmpb
from tashi.v1 import resources_pb2 as pb
from tests.guests import CMDLINE, GUEST_POWEROFF, GUEST_UP, PrivateLibvirt, guest_files
from tests.harness import (
    CMProcess,
    NMProcess,
    Site,
    activate,
    start_cm,
    state,
    stop_all,
    up_host,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

EXPIRE = 3
HEARTBEAT = 0.5


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[PrivateLibvirt]:
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd needs root (unshare)")
    lv = PrivateLibvirt(tmp_path / "libvirt")
    yield lv
    lv.stop()


def console(nm: NMProcess, vm_id: str) -> str:
    path = nm.state_dir / "console" / f"{vm_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def ticks(nm: NMProcess, vm_id: str) -> int:
    lines = [ln for ln in console(nm, vm_id).splitlines() if ln.startswith("tick ")]
    return int(lines[-1].split()[1]) if lines else 0


def test_real_guest_lifecycle(tmp_path: Path, libvirtd: PrivateLibvirt) -> None:
    images = tmp_path / "images"
    images.mkdir()
    guest_files(images)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "disk.qcow2"),
                    "32M"], check=True)
    procs: list[CMProcess | NMProcess] = []
    try:
        site = Site(tmp_path / "ca")  # every service and client over mutual TLS
        cm = start_cm(tmp_path, site=site, images=str(images), expire_host_seconds=EXPIRE)
        procs.append(cm)
        client = cm.client()
        client.create_host("g1")

        def start_nm() -> NMProcess:
            nm = NMProcess(tmp_path / "nm", cm.address, "g1", site=site,
                           libvirt_uri="qemu:///system",
                           images=images, heartbeat_seconds=HEARTBEAT,
                           prefix=libvirtd.enter())
            procs.append(nm)
            return nm

        nm = start_nm()
        host = up_host(client, "g1")
        spec = pb.Instance(name="tiny", spec=pb.InstanceSpec(
            cores=1, memory_mib=192, disks=[pb.Disk(uri="disk.qcow2")],
            hints={"kernel": "vmlinuz", "initrd": "initrd.gz", "cmdline": CMDLINE}))
        inst = client.create_instances(spec)[0]
        activate(client, inst.id, host.id)
        wait_state(client, inst.id, pb.INSTANCE_STATE_RUNNING, timeout=30)
        vm_id = client.get_instance(inst.id).status.vm_id
        wait_for(lambda: GUEST_UP in console(nm, vm_id), timeout=60, what="the guest booted")
        assert len(list((nm.state_dir / "overlays").iterdir())) == 1

        client.instance_action("Pause", inst.id)
        wait_state(client, inst.id, pb.INSTANCE_STATE_PAUSED)
        assert "paused" in libvirtd.virsh("domstate", vm_id)
        frozen = ticks(nm, vm_id)
        time.sleep(1.5)
        assert ticks(nm, vm_id) == frozen, "a paused guest does not run"
        client.instance_action("Unpause", inst.id)
        wait_state(client, inst.id, pb.INSTANCE_STATE_RUNNING)
        wait_for(lambda: ticks(nm, vm_id) > frozen, what="the guest runs again")

        client.instance_action("Suspend", inst.id)
        wait_state(client, inst.id, pb.INSTANCE_STATE_SUSPENDED, timeout=30)
        saved = list((nm.state_dir / "suspend").iterdir())
        assert len(saved) == 1 and saved[0].stat().st_size > 1 << 20
        assert libvirtd.guest_pids() == []
        before = ticks(nm, vm_id)
        client.instance_action("Resume", inst.id)
        wait_state(client, inst.id, pb.INSTANCE_STATE_PENDING)
        activate(client, inst.id, host.id)
        wait_state(client, inst.id, pb.INSTANCE_STATE_RUNNING, timeout=30)
        wait_for(lambda: ticks(nm, vm_id) > before, what="the restored guest ticks on")
        assert console(nm, vm_id).count(GUEST_UP) == 1, "restored, not rebooted"
        assert list((nm.state_dir / "suspend").iterdir()) == []

        # The NM dies; the guest keeps running; the CM orphans it; a new NM re-adopts it.
        qemu = libvirtd.guest_pids()
        assert len(qemu) == 1
        killed = time.monotonic()
        nm.kill()
        wait_state(client, inst.id, pb.INSTANCE_STATE_ORPHANED, timeout=EXPIRE + HEARTBEAT + 2)
        assert time.monotonic() - killed <= EXPIRE + HEARTBEAT + 2
        assert libvirtd.guest_pids() == qemu, "the guest outlives its NM"
        nm = start_nm()
        wait_state(client, inst.id, pb.INSTANCE_STATE_RUNNING, timeout=15)
        assert client.get_instance(inst.id).status.vm_id == vm_id
        assert [v.instance_id for v in nm.stub.ListVms(nmpb.ListVmsRequest()).vms] == [inst.id]
        assert libvirtd.guest_pids() == qemu, "re-adopted, not restarted"
        assert len(client.list_instances()) == 1

        # libvirtd restarts under the NM: it reconnects at once (close callback) and
        # resyncs, so a change made meanwhile reaches the CM without waiting for a poll
        libvirtd.restart_libvirtd()
        assert libvirtd.guest_pids() == qemu
        libvirtd.virsh("suspend", vm_id)  # paused behind the CM's back
        wait_state(client, inst.id, pb.INSTANCE_STATE_PAUSED, timeout=10)
        client.instance_action("Unpause", inst.id)
        wait_state(client, inst.id, pb.INSTANCE_STATE_RUNNING)

        client.instance_action("Shutdown", inst.id)
        wait_state(client, inst.id, -1, timeout=30)
        assert GUEST_POWEROFF in console(nm, vm_id), "the guest powered itself off (ACPI)"
        assert libvirtd.guest_pids() == []
        assert list((nm.state_dir / "overlays").iterdir()) == []
        assert state(client, inst.id) == -1
    finally:
        stop_all(*reversed(procs))
