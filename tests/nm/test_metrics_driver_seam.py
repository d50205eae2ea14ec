"""The node manager's metrics come through the Driver contract alone: a driver that
is not libvirt's gets the same families, and nm/metrics.py never touches libvirt."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

import tashi.nm.metrics
from tashi.nm.driver import ChangeListener, Driver
from tashi.nm.metrics import NodeCollector, collector_for
from tashi.nm.model import (
    PAUSED,
    RUNNING,
    DeviceIO,
    HostFacts,
    MigrationPaths,
    Observation,
    VmInfo,
    VmSpec,
    VmStats,
    VmUsage,
)
from tashi.runtime.version import VERSION

MIB = 1024 * 1024


class FixedDriver(Driver):
    """Answers fixed VMs and usage; every VM operation is refused."""

    def __init__(self, vms: list[VmInfo], usage: dict[int, VmUsage],
                 facts: HostFacts) -> None:
        self.vms = vms
        self.usage = usage
        self.facts = facts
        self.usage_reads = 0

    def host_facts(self) -> HostFacts:
        return self.facts

    def list_vms(self) -> list[VmInfo]:
        return list(self.vms)

    def vm_usage(self) -> dict[int, VmUsage]:
        self.usage_reads += 1
        return dict(self.usage)

    def set_listener(self, listener: ChangeListener) -> None:
        pass

    def resync(self) -> list[Observation]:
        return []

    def close(self) -> None:
        pass

    def vm_spec(self, instance_id: int) -> VmSpec | None:
        return None

    # -- VM operations: not what this driver is for -------------------------------
    def start_vm(self, spec: VmSpec) -> VmInfo:
        raise NotImplementedError

    def shutdown_vm(self, instance_id: int) -> VmInfo:
        raise NotImplementedError

    def destroy_vm(self, instance_id: int) -> VmInfo:
        raise NotImplementedError

    def pause_vm(self, instance_id: int) -> VmInfo:
        raise NotImplementedError

    def unpause_vm(self, instance_id: int) -> VmInfo:
        raise NotImplementedError

    def suspend_vm(self, instance_id: int) -> tuple[VmInfo, str]:
        raise NotImplementedError

    def resume_vm(self, spec: VmSpec, suspend_file: str) -> VmInfo:
        raise NotImplementedError

    def prepare_receive(self, spec: VmSpec) -> tuple[str, MigrationPaths]:
        raise NotImplementedError

    def prepare_source(self, instance_id: int) -> VmInfo:
        raise NotImplementedError

    def send_vm(self, instance_id: int, target_uri: str, cookie: str,
                paths: MigrationPaths | None = None) -> VmInfo:
        raise NotImplementedError

    def receive_vm(self, instance_id: int, cookie: str) -> VmInfo:
        raise NotImplementedError

    def cancel_receive(self, instance_id: int, cookie: str) -> VmInfo | None:
        raise NotImplementedError

    def get_vm(self, instance_id: int) -> VmInfo:
        raise NotImplementedError

    def vm_stats(self, instance_id: int) -> VmStats:
        raise NotImplementedError


WEB = VmInfo(instance_id=7, vm_id="x-7", state=RUNNING, name="web", owner="alice",
             cores=2, memory_mib=768)
DB = VmInfo(instance_id=8, vm_id="x-8", state=PAUSED, name="db", owner="bob",
            cores=1, memory_mib=256)
GONE = VmInfo(instance_id=9, vm_id="x-9", state=RUNNING, name="gone", owner="carol",
              cores=1, memory_mib=128)  # listed, but the hypervisor has no usage for it
FACTS = HostFacts(cores=16, memory_mib=32768, hypervisor="Fixed 1.0")
USAGE = {
    7: VmUsage(state=RUNNING, cpu_seconds=12.5, memory_bytes=700 * MIB,
               maximum_memory_bytes=768 * MIB, vcpus=2,
               disks=(DeviceIO("vda", 4096, 8192, 3, 4), DeviceIO("vdb", 1, 2, 5, 6)),
               nics=(DeviceIO("fx7n0", 100, 200, 10, 20),)),
    8: VmUsage(state=PAUSED, cpu_seconds=1.0, memory_bytes=256 * MIB,
               maximum_memory_bytes=256 * MIB, vcpus=1),
    42: VmUsage(state=RUNNING, cpu_seconds=9.0, memory_bytes=MIB,
                maximum_memory_bytes=MIB, vcpus=1),  # not a VM this NM lists
}


def samples(reg: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in reg.collect() for s in m.samples}


def vm_key(name: str, iid: int, vm: str, owner: str, **more: str
           ) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"instance_id": str(iid), "instance_name": vm, "owner": owner, **more}
    return name, tuple(sorted(labels.items()))


def test_metrics_come_from_any_driver() -> None:
    driver = FixedDriver([WEB, DB, GONE], USAGE, FACTS)
    reg = CollectorRegistry()
    reg.register(NodeCollector(driver, hostname="n1", reserved_memory_mib=512,
                               last_heartbeat=lambda: 123.0, registered=lambda: True,
                               reports_pending=lambda: 2))
    got = samples(reg)
    assert driver.usage_reads == 1
    got.pop(("tashi_nm_libvirt_read_duration_seconds", ()))  # measured, so not fixed

    def web(name: str, **more: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return vm_key(name, 7, "web", "alice", **more)

    def db(name: str, **more: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return vm_key(name, 8, "db", "bob", **more)

    want: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
        ("tashi_nm_libvirt_up", ()): 1,
        ("tashi_nm_info", (("host", "n1"), ("hypervisor", "Fixed 1.0"),
                           ("version", VERSION))): 1,
        ("tashi_nm_host_cores", ()): 16,
        ("tashi_nm_host_memory_bytes", ()): 32768 * MIB,
        ("tashi_nm_host_reserved_memory_bytes", ()): 512 * MIB,
        ("tashi_nm_host_allocated_cores", ()): 4,
        ("tashi_nm_host_allocated_memory_bytes", ()): (768 + 256 + 128) * MIB,
        ("tashi_nm_vms", (("state", "Running"),)): 2,
        ("tashi_nm_vms", (("state", "Paused"),)): 1,
        ("tashi_nm_last_heartbeat_timestamp_seconds", ()): 123.0,
        ("tashi_nm_registered", ()): 1,
        ("tashi_nm_reports_pending", ()): 2,
        web("tashi_vm_cpu_time_seconds_total"): 12.5,
        web("tashi_vm_memory_usage_bytes"): 700 * MIB,
        web("tashi_vm_maximum_memory_bytes"): 768 * MIB,
        web("tashi_vm_virtual_cpus"): 2,
        web("tashi_vm_state", state="Running"): 1,
        web("tashi_vm_state", state="Paused"): 0,
        web("tashi_vm_state", state="Exited"): 0,
        web("tashi_vm_block_stats_read_bytes_total", target_device="vda"): 4096,
        web("tashi_vm_block_stats_write_bytes_total", target_device="vda"): 8192,
        web("tashi_vm_block_stats_read_requests_total", target_device="vda"): 3,
        web("tashi_vm_block_stats_write_requests_total", target_device="vda"): 4,
        web("tashi_vm_block_stats_read_bytes_total", target_device="vdb"): 1,
        web("tashi_vm_block_stats_write_bytes_total", target_device="vdb"): 2,
        web("tashi_vm_block_stats_read_requests_total", target_device="vdb"): 5,
        web("tashi_vm_block_stats_write_requests_total", target_device="vdb"): 6,
        web("tashi_vm_interface_stats_receive_bytes_total", target_device="fx7n0"): 100,
        web("tashi_vm_interface_stats_transmit_bytes_total", target_device="fx7n0"): 200,
        web("tashi_vm_interface_stats_receive_packets_total", target_device="fx7n0"): 10,
        web("tashi_vm_interface_stats_transmit_packets_total", target_device="fx7n0"): 20,
        db("tashi_vm_cpu_time_seconds_total"): 1.0,
        db("tashi_vm_memory_usage_bytes"): 256 * MIB,
        db("tashi_vm_maximum_memory_bytes"): 256 * MIB,
        db("tashi_vm_virtual_cpus"): 1,
        db("tashi_vm_state", state="Running"): 0,
        db("tashi_vm_state", state="Paused"): 1,
        db("tashi_vm_state", state="Exited"): 0,
    }
    assert got == want


def test_a_failing_driver_costs_only_the_vm_series() -> None:
    class Broken(FixedDriver):
        def vm_usage(self) -> dict[int, VmUsage]:
            raise OSError("hypervisor went away")

    reg = CollectorRegistry()
    reg.register(NodeCollector(Broken([WEB], USAGE, FACTS)))
    assert reg.get_sample_value("tashi_nm_libvirt_up") == 0
    assert reg.get_sample_value("tashi_nm_host_allocated_cores") == 2
    assert reg.get_sample_value("tashi_vm_cpu_time_seconds_total", {
        "instance_id": "7", "instance_name": "web", "owner": "alice"}) is None


def test_collector_for_takes_any_driver() -> None:
    class Node:  # the parts of a NodeManager collector_for reads
        driver = FixedDriver([WEB], USAGE, FACTS)
        reporter = None

        class cfg:  # noqa: N801
            hostname = "n2"
            reserved_memory = 0

    reg = CollectorRegistry()
    reg.register(collector_for(Node()))  # type: ignore[arg-type]
    assert reg.get_sample_value("tashi_nm_registered") == 0
    assert reg.get_sample_value("tashi_vm_virtual_cpus", {
        "instance_id": "7", "instance_name": "web", "owner": "alice"}) == 2


def test_metrics_module_imports_no_libvirt() -> None:
    source = Path(tashi.nm.metrics.__file__).read_text()
    imported: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
    assert imported, "the walk found the module's imports"
    assert not [m for m in imported if "libvirt" in m.split(".")], imported
    # and nothing it imports pulls libvirt in either
    out = subprocess.run(
        [sys.executable, "-c", "import sys, tashi.nm.metrics; "
         "print(sorted(m for m in sys.modules if 'libvirt' in m.split('.')))"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

