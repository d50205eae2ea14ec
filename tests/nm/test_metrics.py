"""The node manager's collector on libvirt's test driver: the values a user checks."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tashi.nm.libvirt.driver import LibvirtDriver
from tashi.nm.libvirt.stats import from_bulk
from tashi.nm.metrics import BoundedCall, NodeCollector
from tashi.nm.model import RUNNING, DiskSpec, NicSpec, VmSpec
from tashi.runtime.version import VERSION
from tests.harness import node_xml

MIB = 1024 * 1024


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[LibvirtDriver]:
    images = tmp_path / "images"
    images.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "base.qcow2"),
                    "16M"], check=True)
    uri = "test://" + str(node_xml(tmp_path / "node.xml", cores=8, memory_mib=16384))
    d = LibvirtDriver(uri, images, tmp_path / "state", reserved_memory_mib=1024)
    yield d
    d.close()


def vm(iid: int, name: str, owner: str = "alice", cores: int = 1, memory: int = 512,
       disks: int = 0, nics: int = 0) -> VmSpec:
    return VmSpec(instance_id=iid, name=name, owner=owner, cores=cores, memory_mib=memory,
                  disks=tuple(DiskSpec("base.qcow2") for _ in range(disks)),
                  nics=tuple(NicSpec(1, bridge="br0") for _ in range(nics)))


def registry_of(collector: NodeCollector) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(collector)
    return reg


def labels(iid: int, name: str, owner: str = "alice", **more: str) -> dict[str, str]:
    return {"instance_id": str(iid), "instance_name": name, "owner": owner, **more}


def test_vm_metrics_show_what_the_vm_was_created_with(driver: LibvirtDriver) -> None:
    driver.start_vm(vm(7, "web", cores=2, memory=768, disks=2, nics=1))
    driver.start_vm(vm(8, "db", owner="bob", memory=256))
    driver.pause_vm(8)
    reg = registry_of(NodeCollector(driver, hostname="node1", reserved_memory_mib=1024,
                                    last_heartbeat=lambda: 1700000000.0))
    get = reg.get_sample_value
    web, db = labels(7, "web"), labels(8, "db", "bob")
    assert get("tashi_nm_libvirt_up") == 1
    assert get("tashi_vm_memory_usage_bytes", web) == 768 * MIB
    assert get("tashi_vm_maximum_memory_bytes", web) == 768 * MIB
    assert get("tashi_vm_memory_usage_bytes", db) == 256 * MIB
    assert get("tashi_vm_virtual_cpus", web) == 2
    assert get("tashi_vm_state", {**web, "state": "Running"}) == 1
    assert get("tashi_vm_state", {**web, "state": "Paused"}) == 0
    assert get("tashi_vm_state", {**db, "state": "Paused"}) == 1
    assert get("tashi_vm_state", {**db, "state": "Running"}) == 0
    # one series per disk and NIC, named as libvirt names the device
    for dev in ("vda", "vdb"):
        assert get("tashi_vm_block_stats_read_bytes_total", {**web, "target_device": dev}) > 0
    assert get("tashi_vm_block_stats_read_bytes_total", {**web, "target_device": "vdc"}) is None
    nic = [s for m in reg.collect() if m.name == "tashi_vm_interface_stats_receive_bytes"
           for s in m.samples]
    assert [s.labels["instance_id"] for s in nic] == ["7"]
    # the host: totals, the reserve, what the VMs hold, VMs by state, the heartbeat
    assert get("tashi_nm_host_cores") == 8
    assert get("tashi_nm_host_memory_bytes") == 16384 * MIB
    assert get("tashi_nm_host_reserved_memory_bytes") == 1024 * MIB
    assert get("tashi_nm_host_allocated_cores") == 3
    assert get("tashi_nm_host_allocated_memory_bytes") == (768 + 256) * MIB
    assert get("tashi_nm_vms", {"state": "Running"}) == 1
    assert get("tashi_nm_vms", {"state": "Paused"}) == 1
    assert get("tashi_nm_last_heartbeat_timestamp_seconds") == 1700000000.0
    assert get("tashi_nm_info", {"host": "node1", "version": VERSION,
                                 "hypervisor": driver.host_facts().hypervisor}) == 1


def test_counters_only_grow_and_gone_vms_leave(driver: LibvirtDriver) -> None:
    driver.start_vm(vm(1, "a", disks=1, nics=1))
    driver.start_vm(vm(2, "b"))
    reg = registry_of(NodeCollector(driver))
    a = labels(1, "a")
    disk, nic = {**a, "target_device": "vda"}, {**a, "target_device": ""}
    nic["target_device"] = next(
        s.labels["target_device"] for m in reg.collect()
        if m.name == "tashi_vm_interface_stats_receive_bytes" for s in m.samples)
    counters = [("tashi_vm_cpu_time_seconds_total", a)] + [
        (f"tashi_vm_block_stats_{x}_total", disk) for x in
        ("read_bytes", "write_bytes", "read_requests", "write_requests")] + [
        (f"tashi_vm_interface_stats_{x}_total", nic) for x in
        ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets")]
    before = [reg.get_sample_value(n, lab) for n, lab in counters]
    assert all(v is not None and v > 0 for v in before), before
    time.sleep(0.05)
    after = [reg.get_sample_value(n, lab) for n, lab in counters]
    assert all(b <= c for b, c in zip(before, after, strict=True))  # type: ignore[operator]
    assert after[0] > before[0]  # the test driver's CPU clock moves
    driver.destroy_vm(2)
    assert reg.get_sample_value("tashi_vm_cpu_time_seconds_total", labels(2, "b")) is None
    assert reg.get_sample_value("tashi_nm_vms", {"state": "Running"}) == 1
    assert reg.get_sample_value("tashi_nm_host_allocated_memory_bytes") == 512 * MIB


def test_a_hung_libvirt_never_hangs_the_scrape(driver: LibvirtDriver) -> None:
    driver.start_vm(vm(1, "a", memory=1024))
    reg = registry_of(NodeCollector(driver, timeout=0.3))
    assert reg.get_sample_value("tashi_nm_libvirt_up") == 1
    # Hold the driver's connection lock: every libvirt call now blocks, as when
    # libvirtd hangs.
    with driver.host._lock:
        for _ in range(2):
            start = time.monotonic()
            assert reg.get_sample_value("tashi_nm_libvirt_up") == 0
            assert time.monotonic() - start < 2.0
            # per-VM series are left out; the host's come from the NM's own records
            assert reg.get_sample_value("tashi_vm_memory_usage_bytes", labels(1, "a")) is None
            assert reg.get_sample_value("tashi_nm_host_allocated_memory_bytes") == 1024 * MIB
            assert reg.get_sample_value("tashi_nm_host_cores") == 8
        # scrapes waited on the one hung read rather than starting more
        readers = [t for t in threading.enumerate() if t.name == "nm-metrics-libvirt"]
        assert len(readers) == 1
    assert reg.get_sample_value("tashi_nm_libvirt_up") == 1
    assert reg.get_sample_value("tashi_vm_memory_usage_bytes", labels(1, "a")) == 1024 * MIB


def test_bounded_call_answers_errors_and_gives_up() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        gate.wait(10)
        return len(calls)

    bounded = BoundedCall(slow, timeout=0.1)
    assert bounded() is None and bounded.hung
    assert bounded() is None
    gate.set()
    assert bounded() == 1  # the same call, answered fresh
    assert len(calls) == 1
    assert bounded() == 2 and not bounded.hung

    def broken() -> int:
        raise OSError("libvirt went away")

    with pytest.raises(OSError, match="went away"):
        BoundedCall(broken, timeout=1.0)()


def test_bulk_stats_record() -> None:
    # The keys virConnectGetAllDomainStats documents for QEMU (state, cpu-total,
    # balloon, vcpu, interface and block groups); the test driver reports state only.
    record = {
        "state.state": 1, "state.reason": 1, "cpu.time": 2_500_000_000,
        "balloon.current": 524288, "balloon.maximum": 1048576, "vcpu.current": 2,
        "vcpu.maximum": 2, "net.count": 1, "net.0.name": "tt7n0", "net.0.rx.bytes": 10,
        "net.0.rx.pkts": 1, "net.0.tx.bytes": 20, "net.0.tx.pkts": 2,
        "block.count": 2, "block.0.name": "vda", "block.0.rd.bytes": 4096,
        "block.0.rd.reqs": 1, "block.0.wr.bytes": 8192, "block.0.wr.reqs": 2,
        "block.1.name": "hdc",  # an empty CD drive: no counters
    }
    stats = from_bulk(record)
    assert stats is not None
    assert stats.state == RUNNING
    assert stats.cpu_seconds == 2.5
    assert stats.memory_bytes == 512 * MIB and stats.maximum_memory_bytes == 1024 * MIB
    assert stats.vcpus == 2
    assert [(d.device, d.in_bytes, d.out_bytes, d.in_ops, d.out_ops) for d in stats.disks] == [
        ("vda", 4096, 8192, 1, 2), ("hdc", 0, 0, 0, 0)]
    assert [(n.device, n.in_bytes, n.out_bytes, n.in_ops, n.out_ops) for n in stats.nics] == [
        ("tt7n0", 10, 20, 1, 2)]
    assert from_bulk({"state.state": 1, "state.reason": 0}) is None
