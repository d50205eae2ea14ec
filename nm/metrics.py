"""The node manager's Prometheus metrics: every VM and the host, read at scrape time.

Per VM (labels `instance_id`, `instance_name`, `owner`; disks and NICs add
`target_device`) in the shape of the libvirt exporters: CPU seconds, memory,
block and interface counters, state.  Per host: cores and memory (total,
reserved, allocated), VMs by state, the last heartbeat the CM answered.

Everything comes through the `Driver` contract (`host_facts`, `list_vms`,
`vm_usage`), so this module knows no hypervisor; the libvirt driver reads its
counters in one bulk call.  The read runs on its own thread and the scrape
waits for it at most `timeout` seconds: a hung hypervisor costs the scrape
`tashi_nm_libvirt_up 0` (the name kept from when libvirt was the only
driver) and the per-VM series, never the scrape itself, and a read still hung
is waited on again rather than doubled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tashi.nm.driver import Driver
from tashi.nm.model import EXITED, PAUSED, RUNNING, HostFacts, VmInfo, VmUsage
from tashi.runtime.names import instance_state_name
from tashi.runtime.version import VERSION

if TYPE_CHECKING:
    from tashi.nm.node import NodeManager

log = logging.getLogger(__name__)

T = TypeVar("T")
MIB = 1024 * 1024
DEFAULT_TIMEOUT = 5.0
VM_LABELS = ("instance_id", "instance_name", "owner")
DEVICE_LABELS = (*VM_LABELS, "target_device")
VM_STATES = (RUNNING, PAUSED, EXITED)  # what a running hypervisor domain maps to


# -- a call that may hang ---------------------------------------------------------

class _Pending(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None
        self.finished = 0.0


class BoundedCall(Generic[T]):
    """Runs `fn` on a daemon thread and waits for it at most `timeout` seconds.

    A call that outlives its scrape keeps running; the next scrape waits on
    that same call instead of starting another (threads never pile up behind
    a hung hypervisor), and takes its answer if it is fresh."""

    def __init__(self, fn: Callable[[], T], timeout: float, name: str = "metrics-read") -> None:
        self.fn = fn
        self.timeout = timeout
        self.name = name
        self._lock = threading.Lock()
        self._pending: _Pending[T] | None = None

    def _run(self, pending: _Pending[T]) -> None:
        try:
            pending.value = self.fn()
        except BaseException as exc:  # handed to the waiting scrape
            pending.error = exc
        pending.finished = time.monotonic()
        pending.done.set()

    def __call__(self) -> T | None:
        """The answer, or None when it did not come in time; re-raises its error."""
        with self._lock:
            pending = self._pending
            stale = (pending is not None and pending.done.is_set()
                     and time.monotonic() - pending.finished > self.timeout)
            if pending is None or stale:
                pending = self._pending = _Pending()
                threading.Thread(target=self._run, args=(pending,), name=self.name,
                                 daemon=True).start()
        if not pending.done.wait(self.timeout):
            return None
        with self._lock:
            if self._pending is pending:
                self._pending = None
        if pending.error is not None:
            raise pending.error
        return pending.value

    @property
    def hung(self) -> bool:
        with self._lock:
            return self._pending is not None and not self._pending.done.is_set()


# -- the collector ----------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    facts: HostFacts
    usage: dict[int, VmUsage]  # by instance id
    seconds: float


class NodeCollector(Collector):
    def __init__(self, driver: Driver, *, hostname: str = "",
                 reserved_memory_mib: int = 0,
                 last_heartbeat: Callable[[], float] | None = None,
                 registered: Callable[[], bool] | None = None,
                 reports_pending: Callable[[], int] | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.driver = driver
        self.hostname = hostname
        self.reserved_memory_mib = reserved_memory_mib
        self.last_heartbeat = last_heartbeat
        self.registered = registered
        self.reports_pending = reports_pending
        self._facts: HostFacts | None = None
        self._read = BoundedCall(self._read_driver, timeout, name="nm-metrics-libvirt")

    def _read_driver(self) -> Reading:
        start = time.perf_counter()
        facts = self.driver.host_facts()
        usage = self.driver.vm_usage()
        return Reading(facts, usage, time.perf_counter() - start)

    def collect(self) -> Iterator[Metric]:
        vms = self.driver.list_vms()
        reading: Reading | None = None
        try:
            reading = self._read()
            if reading is None:
                log.warning("the hypervisor did not answer within %.1fs; VM metrics left "
                            "out of this scrape", self._read.timeout)
        except Exception as exc:
            log.warning("reading the hypervisor for metrics failed: %s", exc)
        if reading is not None:
            self._facts = reading.facts
        yield from self._host(vms, reading)
        if reading is not None:
            yield from vm_metrics(vms, reading.usage)

    def _host(self, vms: list[VmInfo], reading: Reading | None) -> Iterator[Metric]:
        up = GaugeMetricFamily("tashi_nm_libvirt_up",
                               "1 if libvirt answered this scrape in time, else 0.")
        up.add_metric([], 1 if reading is not None else 0)
        yield up
        if reading is not None:
            yield GaugeMetricFamily("tashi_nm_libvirt_read_duration_seconds",
                                    "Time reading libvirt took for this scrape.",
                                    value=reading.seconds)
        facts = self._facts
        if facts is not None:
            info = GaugeMetricFamily("tashi_nm_info", "The node manager and its hypervisor.",
                                     labels=("host", "version", "hypervisor"))
            info.add_metric([self.hostname, VERSION, facts.hypervisor], 1)
            yield info
            yield GaugeMetricFamily("tashi_nm_host_cores", "CPU cores of the host.",
                                    value=facts.cores)
            yield GaugeMetricFamily("tashi_nm_host_memory_bytes", "Memory of the host.",
                                    value=facts.memory_mib * MIB)
        yield GaugeMetricFamily("tashi_nm_host_reserved_memory_bytes",
                                "Memory kept for the host itself, never given to VMs.",
                                value=self.reserved_memory_mib * MIB)
        yield GaugeMetricFamily("tashi_nm_host_allocated_cores",
                                "Cores of the VMs this node manager runs.",
                                value=sum(vm.cores for vm in vms))
        yield GaugeMetricFamily("tashi_nm_host_allocated_memory_bytes",
                                "Memory of the VMs this node manager runs.",
                                value=sum(vm.memory_mib for vm in vms) * MIB)
        by_state = GaugeMetricFamily("tashi_nm_vms", "VMs this node manager runs, by state.",
                                     labels=("state",))
        counts: dict[int, int] = {s: 0 for s in (RUNNING, PAUSED)}
        for vm in vms:
            counts[vm.state] = counts.get(vm.state, 0) + 1
        for state, n in sorted(counts.items()):
            by_state.add_metric([instance_state_name(state)], n)
        yield by_state
        if self.last_heartbeat is not None:
            yield GaugeMetricFamily(
                "tashi_nm_last_heartbeat_timestamp_seconds",
                "When the cluster manager last answered a heartbeat or registration "
                "(Unix time; 0: never).", value=self.last_heartbeat())
        if self.registered is not None:
            yield GaugeMetricFamily("tashi_nm_registered",
                                    "1 while the cluster manager counts this host registered.",
                                    value=1 if self.registered() else 0)
        if self.reports_pending is not None:
            yield GaugeMetricFamily("tashi_nm_reports_pending",
                                    "VM state changes not yet delivered to the cluster manager.",
                                    value=self.reports_pending())


def vm_metrics(vms: list[VmInfo], usage: Mapping[int, VmUsage]) -> Iterator[Metric]:
    """The per-VM families, in the libvirt exporters' shape, for the VMs the driver answered."""
    cpu = CounterMetricFamily("tashi_vm_cpu_time_seconds",
                              "CPU time the VM has used.", labels=VM_LABELS)
    mem = GaugeMetricFamily("tashi_vm_memory_usage_bytes",
                            "Memory the VM has now (balloon size).", labels=VM_LABELS)
    mem_max = GaugeMetricFamily("tashi_vm_maximum_memory_bytes",
                                "Memory the VM may have at most.", labels=VM_LABELS)
    vcpus = GaugeMetricFamily("tashi_vm_virtual_cpus", "Virtual CPUs of the VM.",
                              labels=VM_LABELS)
    state = GaugeMetricFamily("tashi_vm_state", "1 for the state the VM is in, else 0.",
                              labels=(*VM_LABELS, "state"))

    def family(kind: str, what: str, unit: str, help_text: str) -> CounterMetricFamily:
        return CounterMetricFamily(f"tashi_vm_{kind}_stats_{what}_{unit}", help_text,
                                   labels=DEVICE_LABELS)

    rd_b = family("block", "read", "bytes", "Bytes read from a disk of the VM.")
    wr_b = family("block", "write", "bytes", "Bytes written to a disk of the VM.")
    rd_r = family("block", "read", "requests", "Read requests on a disk of the VM.")
    wr_r = family("block", "write", "requests", "Write requests on a disk of the VM.")
    rx_b = family("interface", "receive", "bytes", "Bytes a NIC of the VM received.")
    tx_b = family("interface", "transmit", "bytes", "Bytes a NIC of the VM transmitted.")
    rx_p = family("interface", "receive", "packets", "Packets a NIC of the VM received.")
    tx_p = family("interface", "transmit", "packets", "Packets a NIC of the VM transmitted.")
    for vm in vms:
        d = usage.get(vm.instance_id)
        if d is None:
            continue
        labels = [str(vm.instance_id), vm.name, vm.owner]
        cpu.add_metric(labels, d.cpu_seconds)
        mem.add_metric(labels, d.memory_bytes)
        mem_max.add_metric(labels, d.maximum_memory_bytes)
        vcpus.add_metric(labels, d.vcpus)
        for s in VM_STATES:
            state.add_metric([*labels, instance_state_name(s)], 1 if s == d.state else 0)
        for disk in d.disks:
            dev = [*labels, disk.device]
            rd_b.add_metric(dev, disk.in_bytes)
            wr_b.add_metric(dev, disk.out_bytes)
            rd_r.add_metric(dev, disk.in_ops)
            wr_r.add_metric(dev, disk.out_ops)
        for nic in d.nics:
            dev = [*labels, nic.device]
            rx_b.add_metric(dev, nic.in_bytes)
            tx_b.add_metric(dev, nic.out_bytes)
            rx_p.add_metric(dev, nic.in_ops)
            tx_p.add_metric(dev, nic.out_ops)
    yield from (cpu, mem, mem_max, vcpus, state, rd_b, wr_b, rd_r, wr_r, rx_b, tx_b, rx_p, tx_p)


def collector_for(node: NodeManager, timeout: float = DEFAULT_TIMEOUT) -> NodeCollector:
    """The collector of a running node manager, whatever its driver."""
    return NodeCollector(
        node.driver, hostname=node.cfg.hostname, reserved_memory_mib=node.cfg.reserved_memory,
        last_heartbeat=lambda: node.reporter.last_heartbeat if node.reporter else 0.0,
        registered=lambda: bool(node.reporter is not None and node.reporter.registered),
        reports_pending=lambda: node.reporter.pending() if node.reporter is not None else 0,
        timeout=timeout)


def serve(node: NodeManager) -> str:
    """Serve the node manager's metrics on its `metrics_listen` (no-op when unset)."""
    if not node.metrics.enabled:
        return ""
    return node.metrics.serve(collector_for(node))
