"""VM metrics of a real Linux guest under QEMU (TCG), from a private libvirtd: the
bulk-statistics path the test driver cannot exercise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.guests import CMDLINE, GUEST_UP, PrivateLibvirt, guest_files
from tests.harness import CMProcess, NMProcess, Site, start_cm, wait_for

pytestmark = [pytest.mark.system, pytest.mark.slow]

MIB = 1024 * 1024
METRICS_RE = re.compile(r"serving metrics on http://(\S+)/metrics")

# Runs beside the private libvirtd (in its mount namespace): the bulk record as
# the libvirt driver parses it for the metrics, for every running domain.
BULK = """
import dataclasses, json, libvirt
from tashi.nm.libvirt.stats import BULK_FLAGS, BULK_STATS, from_bulk
conn = libvirt.open("qemu:///system")
out = {}
for dom, record in conn.getAllDomainStats(BULK_STATS, BULK_FLAGS):
    stats = from_bulk(record)
    out[dom.name()] = dataclasses.asdict(stats) if stats else None
print(json.dumps(out))
"""


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[PrivateLibvirt]:
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd needs root (unshare)")
    lv = PrivateLibvirt(tmp_path / "libvirt")
    yield lv
    lv.stop()


def scrape(address: str) -> dict[tuple[str, str], float]:
    """{(sample name, target_device or ""): value} of the one VM."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, s.labels.get("target_device", s.labels.get("state", ""))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("instance_name") == "tiny"}


def test_real_guest_metrics(tmp_path: Path, libvirtd: PrivateLibvirt) -> None:
    images = tmp_path / "images"
    images.mkdir()
    guest_files(images)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "disk.qcow2"),
                    "32M"], check=True)
    procs: list[CMProcess | NMProcess] = []
    try:
        site = Site(tmp_path / "ca")  # every service and client over mutual TLS
        cm = start_cm(tmp_path, site=site, images=str(images))
        procs.append(cm)
        root = cm.client()
        root.create_user("alice")
        host = root.create_host("g1")
        nm = NMProcess(tmp_path / "nm", cm.address, "g1", site=site,
                       libvirt_uri="qemu:///system",
                       images=images, prefix=libvirtd.enter(),
                       extra=["--metrics-listen", "127.0.0.1:0"])
        procs.append(nm)
        address = wait_for(lambda: (m := METRICS_RE.search(nm.log_path.read_text())) and
                           m.group(1), what="the NM serving metrics")
        wait_for(lambda: root.get_host("g1").up, what="g1 up")
        spec = pb.Instance(name="tiny", spec=pb.InstanceSpec(
            cores=1, memory_mib=192, disks=[pb.Disk(uri="disk.qcow2")],
            hints={"kernel": "vmlinuz", "initrd": "initrd.gz", "cmdline": CMDLINE}))
        inst = cm.client("alice").create_instances(spec)[0]
        assert root.activate([pl.Placement(instance_id=inst.id, host_id=host.id)]
                             ).results[0].accepted
        wait_for(lambda: root.get_instance(inst.id).status.state == pb.INSTANCE_STATE_RUNNING,
                 timeout=30, what="tiny running")
        vm_id = root.get_instance(inst.id).status.vm_id
        console = nm.state_dir / "console" / f"{vm_id}.log"
        wait_for(lambda: console.exists() and GUEST_UP in console.read_text(errors="replace"),
                 timeout=60, what="the guest booted")

        first = scrape(address)
        assert first[("tashi_vm_memory_usage_bytes", "")] == 192 * MIB
        assert first[("tashi_vm_maximum_memory_bytes", "")] == 192 * MIB
        assert first[("tashi_vm_virtual_cpus", "")] == 1
        assert first[("tashi_vm_state", "Running")] == 1
        assert first[("tashi_vm_cpu_time_seconds_total", "")] > 0  # it booted a kernel
        assert ("tashi_vm_block_stats_read_requests_total", "vda") in first
        time.sleep(1.5)  # the guest ticks every second
        second = scrape(address)
        counters = [k for k in first if k[0].endswith("_total")]
        assert counters
        assert all(second[k] >= first[k] for k in counters), (first, second)
        assert second[("tashi_vm_cpu_time_seconds_total", "")] > \
            first[("tashi_vm_cpu_time_seconds_total", "")]

        # The same values come from libvirt's bulk statistics, the path real hosts take.
        out = subprocess.run([*libvirtd.enter(), sys.executable, "-c", BULK],
                             capture_output=True, text=True, timeout=60, check=True)
        bulk = json.loads(out.stdout)[vm_id]
        assert bulk is not None, "QEMU's bulk record has the counters"
        assert bulk["memory_bytes"] == 192 * MIB and bulk["vcpus"] == 1
        assert [d["device"] for d in bulk["disks"]] == ["vda"]
        assert bulk["cpu_seconds"] >= second[("tashi_vm_cpu_time_seconds_total", "")]
    finally:
        for p in reversed(procs):
            p.stop()
