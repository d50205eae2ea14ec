"""Across real hosts (issue 13): the whole Tashi stack (CM, scheduler, two NMs, all
over mutual TLS) on two real libvirt daemons (tests/twohosts.py: each its own
mount namespace, host UUID and site certificate, migrating over libvirt's TLS
transport with TLS data), TCG guests whose serial console counts ticks.

- live migration there and back: the same boot ticks on, on the other host;
- a guest on a local (non-shared) overlay migrates with its disk's content;
- a migration that fails leaves the VM Running on its source, the target's claim
  and overlay gone at once, and a retry succeeds;
- evacuateHost moves every guest of a host;
- suspend on A, drain A, resume: back on A (its saved state is there), ticking on;
- decayed while an NM is silent, cleared when it speaks again;
- the serial console (a pty) migrates: attachable on the target, its log there.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.v1 import resources_pb2 as pb
from tests.guests import GUEST_UP
from tests.harness import wait_for, wait_state
from tests.twohost_cluster import RUNNING, TICK, TwoHostCluster

pytestmark = [pytest.mark.system, pytest.mark.slow]

S = pb


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TwoHostCluster]:
    if os.geteuid() != 0:
        pytest.skip("private libvirt daemons need root (unshare)")
    c = TwoHostCluster.start(tmp_path, expire_host_seconds=30, decay_seconds=1.5)
    try:
        yield c
    finally:
        c.stop()


def test_live_migration_there_and_back(cluster: TwoHostCluster) -> None:
    c = cluster
    inst = c.boot("counter", "hosta")
    hosts = {h.name: h for h in c.client.list_hosts()}
    assert hosts["hosta"].capabilities.live_migration
    assert hosts["hostb"].capabilities.migration_uri == c.pair.b.uri
    before = c.ticks_on("hosta", inst.id)
    c.migrate(inst.id, "hostb")
    wait_for(lambda: c.ticks_on("hostb", inst.id) > before, 20, what="ticks on hostb")
    first_b = int(TICK.findall(c.nms["hostb"].state_dir.joinpath(
        "console", f"tashi-{inst.id}.log").read_text())[0])
    # The guest ticks on hosta while its memory is sent (longer on a loaded machine),
    # then on hostb from the next tick (or the one after, when the switch cut a line
    # in two): the same boot, no gap.
    last_a = c.ticks_on("hosta", inst.id)
    assert before <= last_a < first_b <= last_a + 2, "the same boot goes on, no gap"
    assert c.pair.a.guest_pids() == [] and len(c.pair.b.guest_pids()) == 1
    c.migrate(inst.id, "hosta")
    seen = c.ticks_on("hostb", inst.id)
    wait_for(lambda: c.ticks_on("hosta", inst.id) > seen, 20, what="ticks back on hosta")
    assert c.console(inst.id).count(GUEST_UP) == 1, "never rebooted"
    got = c.client.get_instance(inst.id)
    assert list(got.status.charged_host_ids) == [c.client.get_host("hosta").id]


def disk_tick(overlay: Path) -> int:
    """The tick the guest last wrote to its disk's first sector, read beside the
    running VM (a raw copy of the disk, qemu-img's shared read)."""
    copy = overlay.parents[2] / f"{overlay.name}.read.raw"  # beside the NM, not in its dirs
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(overlay),
                    str(copy)], check=True, capture_output=True)
    try:
        with open(copy, "rb") as fh:
            m = re.match(rb"tick (\d+)", fh.read(512))
    finally:
        copy.unlink()
    return int(m.group(1)) if m else 0


def test_local_overlay_moves_with_its_content(cluster: TwoHostCluster) -> None:
    c = cluster
    inst = c.boot("disky", "hosta", disk="base.qcow2")
    overlay_a = c.nms["hosta"].state_dir / "overlays" / f"tashi-{inst.id}-vda.qcow2"
    written = wait_for(lambda: disk_tick(overlay_a), 20, what="the guest writes its disk")
    c.migrate(inst.id, "hostb")
    overlay_b = c.nms["hostb"].state_dir / "overlays" / f"tashi-{inst.id}-vda.qcow2"
    assert overlay_b.exists() and not overlay_a.exists(), "the overlay moved, the old one gone"
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay_b)],
                          capture_output=True, text=True, check=True).stdout
    assert str(c.images / "base.qcow2") in info, "over the same base in the shared store"
    assert disk_tick(overlay_b) >= written, "what it wrote on hosta is on hostb's disk"
    now = disk_tick(overlay_b)
    wait_for(lambda: disk_tick(overlay_b) > now, 20, what="it writes on, on hostb")


def test_a_failed_migration_leaves_it_on_the_source_and_a_retry_works(
        cluster: TwoHostCluster) -> None:
    c = cluster
    # hostb's NM advertises a port where nothing listens: the target refuses.
    c.start_nm("hostb", migration_uri="qemu+tls://hostb:1/system")
    inst = c.boot("stubborn", "hosta", disk="base.qcow2")
    c.client.migrate_instance(inst.id, "hostb")
    got = wait_for(lambda: (i := c.client.get_instance(inst.id)).status.state == RUNNING
                   and i.status.reason and i, 60, what="the migration failed")
    assert got.status.host_name == "hosta" and "failed at send" in got.status.reason
    assert list(got.status.charged_host_ids) == [c.client.get_host("hosta").id]
    assert c.client.get_host("hostb").used_memory_mib == 0, "the target is charged nothing"
    overlays_b = c.nms["hostb"].state_dir / "overlays"
    assert not any(overlays_b.glob(f"tashi-{inst.id}-*")), "the target's claim is released"
    before = c.ticks_on("hosta", inst.id)
    wait_for(lambda: c.ticks_on("hosta", inst.id) > before, 20, what="still ticking on hosta")
    c.start_nm("hostb")
    c.migrate(inst.id, "hostb")  # the retry
    assert c.console(inst.id).count(GUEST_UP) == 1


def test_evacuate_a_host(cluster: TwoHostCluster) -> None:
    c = cluster
    guests = [c.boot(f"e{i}", "hosta") for i in range(3)]
    resp = c.client.evacuate_host("hosta", parallel=2)
    assert {e.target_host_name for e in resp.evacuations} == {"hostb"}
    for g in guests:
        wait_for(lambda g=g: c.host_of(g.id) == "hostb"  # type: ignore[misc]
                 and c.client.get_instance(g.id).status.state == RUNNING, 120,
                 what=f"{g.name} on hostb")
    assert c.client.get_host("hosta").state == pb.HOST_STATE_DRAINED
    assert c.pair.a.guest_pids() == [] and len(c.pair.b.guest_pids()) == 3
    for g in guests:
        seen = c.ticks_on("hostb", g.id)
        wait_for(lambda g=g, seen=seen: c.ticks_on("hostb", g.id) > seen, 20,  # type: ignore[misc]
                 what=f"{g.name} ticks on hostb")


def test_suspend_drain_resume(cluster: TwoHostCluster) -> None:
    c = cluster
    inst = c.boot("sleeper", "hosta")
    c.client.instance_action("Suspend", inst.id)
    wait_state(c.client, inst.id, S.INSTANCE_STATE_SUSPENDED, timeout=60)
    before = c.ticks_on("hosta", inst.id)
    c.client.set_host_state("hosta", pb.HOST_STATE_DRAINED)
    c.client.instance_action("Resume", inst.id)
    wait_state(c.client, inst.id, RUNNING, timeout=60)
    assert c.host_of(inst.id) == "hosta", "resumed where its saved state is"
    wait_for(lambda: c.ticks_on("hosta", inst.id) > before, 20, what="ticks on after resume")
    assert c.console(inst.id).count(GUEST_UP) == 1, "restored, not rebooted"


def test_decayed_set_and_cleared(cluster: TwoHostCluster) -> None:
    c = cluster
    inst = c.boot("watched", "hostb")
    nm = c.nms["hostb"]
    assert nm.proc.pid
    os.kill(nm.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: c.client.get_host("hostb").decayed, 10, what="hostb decayed")
        assert c.client.get_instance(inst.id).status.decayed
        assert not c.client.get_host("hosta").decayed
    finally:
        os.kill(nm.proc.pid, signal.SIGCONT)
    wait_for(lambda: not c.client.get_host("hostb").decayed, 10, what="hostb fresh again")
    assert not c.client.get_instance(inst.id).status.decayed


def test_the_console_follows_the_vm_to_its_new_host(cluster: TwoHostCluster) -> None:
    """The pty serial migrates: on the target, a new pty (attachable) and the log
    going on in the target's file, which is what the CM serves from then on."""
    c = cluster

    def ask(command: bytes, wanted: bytes) -> bool:
        with c.client.attach_console(inst.id, [command]) as session:
            seen = bytearray()
            for chunk in session:
                seen.extend(chunk)
                if wanted in seen:
                    return True
        return False

    inst = c.boot("talker", "hosta")
    assert ask(b"echo on-$((40+1))\n", b"on-41")
    c.migrate(inst.id, "hostb")
    assert ask(b"echo moved-$((6*7))\n", b"moved-42"), "attachable on hostb"
    seen = c.ticks_on("hostb", inst.id)
    wait_for(lambda: c.ticks_on("hostb", inst.id) > seen, 20, what="ticks on hostb")
    served = b"".join(c.client.read_console(inst.id))
    assert served == c.console_path("hostb", inst.id).read_bytes()[:len(served)]
    assert b"moved-42" in served and GUEST_UP.encode() not in served, \
        "hostb's log, from the arrival"
