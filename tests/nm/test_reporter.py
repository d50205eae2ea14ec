"""The reporter against a recording NodeRegistryService on loopback gRPC.

The CM's own rules decide which reports change an instance (see
tests/nm/test_cluster.py); here we check what the NM sends: registration facts, every
observed change in order with increasing report_seq, nothing lost while the
registry is down, and a fresh registration when the heartbeat says so.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tashi.nm.libvirt.driver import LibvirtDriver
from tashi.nm.model import DiskSpec, VmSpec
from tashi.nm.reporter import MAX_ASKED_INTERVAL, Reporter
from tashi.nm.servicer import NodeManagerServicer
from tashi.runtime import server
from tashi.runtime.client import ClusterClient
from tashi.v1 import node_manager_pb2 as nm
from tashi.v1 import node_registry_pb2 as reg
from tashi.v1 import node_registry_pb2_grpc as reg_grpc
from tashi.v1 import resources_pb2 as pb
from tests.harness import node_xml, wait_for

S = pb


class Registry(reg_grpc.NodeRegistryServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.registrations: list[reg.RegisterHostRequest] = []
        self.reports: list[reg.InstanceReport] = []
        self.registered = True
        self.asked = 0.0  # the heartbeat interval this CM asks for
        self.refuse_reports = False

    def RegisterHost(self, request: Any, context: Any) -> reg.RegisterHostResponse:
        with self.lock:
            self.registrations.append(request)
            self.registered = True
        return reg.RegisterHostResponse(heartbeat_seconds=2, expire_host_seconds=10,
                                        heartbeat_interval_seconds=self.asked)

    def Heartbeat(self, request: Any, context: Any) -> reg.HeartbeatResponse:
        with self.lock:
            return reg.HeartbeatResponse(registered=self.registered,
                                         heartbeat_interval_seconds=self.asked)

    def ReportInstances(self, request: Any, context: Any) -> reg.ReportInstancesResponse:
        if self.refuse_reports:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
        with self.lock:
            # Like the CM: a report already applied (a retry after a lost answer) is skipped.
            top = max((r.report_seq for r in self.reports), default=0)
            self.reports.extend(r for r in request.reports if r.report_seq > top)
            return reg.ReportInstancesResponse(
                applied_seq=max((r.report_seq for r in self.reports), default=0))

    def reports_by_instance(self) -> dict[int, list[int]]:
        with self.lock:
            out: dict[int, list[int]] = {}
            for r in self.reports:
                out.setdefault(r.instance_id, []).append(r.state)
            return out

    def states(self, iid: int) -> list[int]:
        with self.lock:
            return [r.state for r in self.reports if r.instance_id == iid]


def serve(registry: Registry, listen: str = "127.0.0.1:0") -> server.Running:
    return server.start(listen, [server.Service(
        reg.DESCRIPTOR.services_by_name["NodeRegistryService"].full_name, registry,
        reg_grpc.add_NodeRegistryServiceServicer_to_server)])


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[LibvirtDriver, Registry, server.Running, Reporter]]:
    images = tmp_path / "images"
    images.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "b.qcow2"), "1M"],
                   check=True)
    drv = LibvirtDriver("test://" + str(node_xml(tmp_path / "node.xml", 8, 4096)), images,
                        tmp_path / "state", reserved_memory_mib=1000)
    registry = Registry()
    running = serve(registry)
    client = ClusterClient(f"127.0.0.1:{running.port}")
    rep = Reporter(drv, client, "h1", "127.0.0.1:9999", reserved_memory_mib=1000,
                   heartbeat_seconds=0.2)
    yield drv, registry, running, rep
    rep.stop()
    client.close()
    drv.close()
    running.stop(0)


def spec(iid: int) -> VmSpec:
    return VmSpec(iid, f"vm{iid}", "alice", 1, 64, disks=(DiskSpec("b.qcow2"),))


def test_registers_with_facts_and_running_vms(
        setup: tuple[LibvirtDriver, Registry, server.Running, Reporter]) -> None:
    drv, registry, _running, rep = setup
    drv.start_vm(spec(1))
    rep.start()
    wait_for(lambda: registry.registrations, what="registration")
    r = registry.registrations[0]
    assert (r.name, r.cores, r.memory_mib, r.nm_address) == ("h1", 8, 3096, "127.0.0.1:9999")
    assert [(i.instance_id, i.state, i.spec.owner, i.spec.spec.disks[0].uri,
             i.spec.status.state, i.spec.status.vm_id) for i in r.instances] \
        == [(1, S.INSTANCE_STATE_RUNNING, "alice", "b.qcow2", S.INSTANCE_STATE_RUNNING, "tashi-1")]


def test_a_registration_is_numbered_between_what_it_lists_and_later_starts(
        setup: tuple[LibvirtDriver, Registry, server.Running, Reporter]) -> None:
    """The list's own number is above every VM it lists and below the answer of any
    start after it, from the clock the reports use: what the CM compares to refuse
    an out-of-date list (tests/cm/test_registration_order.py)."""
    drv, registry, _running, rep = setup
    drv.start_vm(spec(1))
    servicer = NodeManagerServicer(drv, stamp=rep.clock.next)
    rep.start()
    wait_for(lambda: registry.registrations, what="registration")
    r = registry.registrations[0]
    assert r.incarnation == rep.clock.incarnation != 0
    assert [i.instance_id for i in r.instances] == [1]
    assert 0 < r.instances[0].report_seq < r.snapshot_seq
    answer = servicer.StartVms(nm.StartVmsRequest(starts=[nm.StartVmRequest(
        instance=pb.Instance(id=2, name="vm2", owner="alice", spec=pb.InstanceSpec(
            cores=1, memory_mib=64, disks=[pb.Disk(uri="b.qcow2")])))]), None)
    assert answer.results[0].vm.state == S.INSTANCE_STATE_RUNNING
    assert answer.results[0].vm.report_seq > r.snapshot_seq
    wait_for(lambda: registry.states(2) == [S.INSTANCE_STATE_RUNNING], what="running report")
    assert [x.report_seq for x in registry.reports if x.instance_id == 2][0] > r.snapshot_seq


def test_the_answer_of_every_action_is_numbered_after_what_was_reported_before(
        setup: tuple[LibvirtDriver, Registry, server.Running, Reporter]) -> None:
    """A pause's answer carries a report_seq above the RUNNING report the reporter
    numbered before it, and below the PAUSED one the pause made: the CM tells
    from it a report still in flight when the answer came, and applies what the
    action itself made the host see (tests/cm/test_answer_order.py)."""
    drv, registry, _running, rep = setup
    servicer = NodeManagerServicer(drv, stamp=rep.clock.next)
    rep.start()
    wait_for(lambda: registry.registrations, what="registration")
    drv.start_vm(spec(4))
    wait_for(lambda: registry.states(4) == [S.INSTANCE_STATE_RUNNING], what="running report")
    answers = [servicer.PauseVm(nm.PauseVmRequest(instance_id=4), None).vm,
               servicer.UnpauseVm(nm.UnpauseVmRequest(instance_id=4), None).vm,
               servicer.DestroyVm(nm.DestroyVmRequest(instance_id=4), None).vm]
    wait_for(lambda: len(registry.states(4)) == 4, what="paused, running, exited reports")
    reports = [x for x in registry.reports if x.instance_id == 4]
    assert [x.state for x in reports] == [S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED,
                                          S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_EXITED]
    assert [a.state for a in answers] == [S.INSTANCE_STATE_PAUSED, S.INSTANCE_STATE_RUNNING,
                                          S.INSTANCE_STATE_EXITED]
    for before, answer, after in zip(reports, answers, reports[1:], strict=False):
        assert 0 < before.report_seq < answer.report_seq < after.report_seq


def test_reports_in_order_and_nothing_lost_while_the_cm_is_away(
        setup: tuple[LibvirtDriver, Registry, server.Running, Reporter]) -> None:
    drv, registry, running, rep = setup
    rep.start()
    wait_for(lambda: registry.registrations, what="registration")
    drv.start_vm(spec(2))
    wait_for(lambda: registry.states(2) == [S.INSTANCE_STATE_RUNNING], what="running report")
    # The answer must have reached the reporter too, or it rightly keeps the report.
    wait_for(lambda: rep.pending() == 0, what="running report acknowledged")
    running.stop(0)  # the CM goes away
    drv.pause_vm(2)
    drv.unpause_vm(2)
    drv.pause_vm(2)
    drv.start_vm(spec(3))
    drv.destroy_vm(3)
    wait_for(lambda: rep.pending() == 5, what="five buffered reports")
    wait_for(lambda: rep.last_error, what="the reporter to notice")
    port = running.port
    back = serve(registry, f"127.0.0.1:{port}")  # the CM comes back where it was
    try:
        wait_for(lambda: rep.pending() == 0, timeout=10, what="buffer delivered")
        assert registry.states(2) == [S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED,
                                      S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED]
        assert registry.states(3) == [S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_EXITED]
        seqs = [r.report_seq for r in registry.reports]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # the CM lost us (restart, expiry): the next heartbeat leads to a new registration
        with registry.lock:
            registry.registered = False
        wait_for(lambda: len(registry.registrations) == 2, what="re-registration")
        snapshot = registry.registrations[1].instances
        assert [(i.instance_id, i.state) for i in snapshot] == [(2, S.INSTANCE_STATE_PAUSED)]
        assert snapshot[0].report_seq > seqs[-1]
    finally:
        back.stop(0)


class SlowRegistry(Registry):
    """A CM whose reports wait for a busy lock: each takes `report_seconds`."""

    def __init__(self, report_seconds: float = 0.3) -> None:
        super().__init__()
        self.beats: list[float] = []
        self.report_seconds = report_seconds

    def Heartbeat(self, request: Any, context: Any) -> reg.HeartbeatResponse:
        self.beats.append(time.monotonic())
        return super().Heartbeat(request, context)

    def ReportInstances(self, request: Any, context: Any) -> reg.ReportInstancesResponse:
        time.sleep(self.report_seconds)
        return super().ReportInstances(request, context)


@contextmanager
def slow_cm(tmp_path: Path, report_seconds: float) -> Iterator[tuple[LibvirtDriver, SlowRegistry]]:
    """A reporter (heartbeats every 0.2 s) registered with a SlowRegistry."""
    drv = LibvirtDriver("test://" + str(node_xml(tmp_path / "node.xml", 64, 65536)),
                        tmp_path, tmp_path / "state")
    registry = SlowRegistry(report_seconds)
    running = serve(registry)
    client = ClusterClient(f"127.0.0.1:{running.port}")
    rep = Reporter(drv, client, "h1", "127.0.0.1:9999", heartbeat_seconds=0.2)
    try:
        rep.start()
        wait_for(lambda: registry.registrations, what="registration")
        yield drv, registry
    finally:
        rep.stop()
        client.close()
        drv.close()
        running.stop(0)


def gaps_between(beats: list[float], t0: float, t1: float) -> list[float]:
    inside = [b for b in beats if t0 < b < t1]
    return [b - a for a, b in zip(inside, inside[1:], strict=False)]


def test_beats_no_more_often_than_the_cm_asks(tmp_path: Path) -> None:
    """A CM with a large fleet asks for a longer interval (cm/cadence.py) in its
    answers: the NM beats at that instead of its own 0.2 s, and at its own again
    once the CM asks for less, or answers nonsense."""
    with slow_cm(tmp_path, 0.0) as (_drv, registry):
        registry.asked = 0.6
        time.sleep(0.8)  # one more beat at 0.2 s hears it
        t0 = time.monotonic()
        time.sleep(2.5)
        gaps = gaps_between(registry.beats, t0, time.monotonic())
        assert 2 <= len(gaps) <= 4 and min(gaps) > 0.5, gaps
        registry.asked = float("nan")
        time.sleep(0.8)
        t0 = time.monotonic()
        time.sleep(1.2)
        gaps = gaps_between(registry.beats, t0, time.monotonic())
        assert len(gaps) >= 3 and max(gaps) < 0.45, gaps


def test_an_asked_interval_is_bounded(tmp_path: Path) -> None:
    """A CM asking for hours, or less than nothing, neither stops the beats nor makes
    them faster than the NM's own interval."""
    rep = Reporter(LibvirtDriver("test:///default", tmp_path, tmp_path / "state"),
                   ClusterClient("127.0.0.1:1"), "h1", "127.0.0.1:9999", heartbeat_seconds=2.0)
    for asked, interval in ((5.0, 5.0), (1e12, MAX_ASKED_INTERVAL), (-3.0, 2.0),
                            (float("inf"), 2.0), (float("nan"), 2.0), (0.5, 2.0)):
        rep._asked(asked)
        assert rep.beat_interval() == interval, asked
    rep.client.close()
    rep.driver.close()


def test_heartbeats_go_on_while_reports_are_slow(tmp_path: Path) -> None:
    """Changes keep coming and each report takes 0.3 s: the heartbeat (every 0.2 s)
    still goes out between batches, never held back for the whole stream."""
    with slow_cm(tmp_path, 0.3) as (drv, registry):
        t0 = time.monotonic()
        for iid in range(1, 31):  # a change every 0.1 s for 3 s
            drv.start_vm(VmSpec(iid, f"vm{iid}", "alice", 1, 64))
            time.sleep(0.1)
        beats = [b for b in registry.beats if b > t0]
        gaps = [b - a for a, b in zip([t0, *beats], beats, strict=False)]
        assert len(beats) >= 5 and max(gaps) < 1.0, gaps
        wait_for(lambda: all(r.report_seq for r in registry.reports) and len(
            registry.reports_by_instance()) == 30, timeout=10, what="every report delivered")
        assert sorted(i for i, s in registry.reports_by_instance().items()
                      if s == [S.INSTANCE_STATE_RUNNING]) == list(range(1, 31))


def test_one_report_waiting_seconds_does_not_hold_a_beat_back(tmp_path: Path) -> None:
    """A report that waits 3 s for a busy CM (its lock, or a slot to be admitted):
    the heartbeats, every 0.2 s, go on meanwhile from their own thread.  (When
    they came from the reporting thread, between batches, a host whose report
    waited longer than the expiry went down and orphaned its VMs.)"""
    with slow_cm(tmp_path, 3.0) as (drv, registry):
        t0 = time.monotonic()
        drv.start_vm(VmSpec(1, "vm1", "alice", 1, 64))
        wait_for(lambda: registry.states(1) == [S.INSTANCE_STATE_RUNNING], timeout=10,
                 what="the slow report")
        t1 = time.monotonic()
        assert t1 - t0 >= 3.0
        beats = [b for b in registry.beats if t0 < b < t1]
        gaps = [b - a for a, b in zip([t0, *beats], [*beats, t1], strict=True)]
        assert len(beats) >= 10 and max(gaps) < 1.0, gaps


def _start_request(iid: int) -> nm.StartVmRequest:
    return nm.StartVmRequest(request_id=f"s{iid}", instance=pb.Instance(
        id=iid, name=f"vm{iid}", owner="alice", spec=pb.InstanceSpec(cores=1, memory_mib=64)))


def test_what_a_starts_answer_told_waits_for_other_news(
        setup: tuple[LibvirtDriver, Registry, server.Running, Reporter]) -> None:
    """The VMs a start call ran are told to the CM by its answer: their reports are
    held (not dropped), go with the next news, in order, or when the hold ends."""
    drv, registry, _running, rep = setup
    servicer = NodeManagerServicer(drv, stamp=rep.clock.next, answering=rep.answering)
    rep.start()
    wait_for(lambda: registry.registrations, what="registration")
    answers = servicer.StartVms(nm.StartVmsRequest(starts=[_start_request(1),
                                                           _start_request(2)]), None)
    assert [r.vm.state for r in answers.results] == [S.INSTANCE_STATE_RUNNING] * 2
    time.sleep(0.5)
    assert registry.reports_by_instance() == {}, "held: the answer told the CM"
    assert rep.pending() == 2
    # News of its own goes at once, and the held reports with it; vm2's end
    # supersedes its start.
    drv.destroy_vm(2)
    wait_for(lambda: registry.states(2) == [S.INSTANCE_STATE_EXITED], what="vm2's end reported")
    assert registry.states(1) == [S.INSTANCE_STATE_RUNNING]
    seqs = [r.report_seq for r in registry.reports]
    assert seqs == sorted(seqs), "in the order they were seen"
    rep.answered_hold_seconds = 1.0
    servicer.StartVm(_start_request(3), None)
    time.sleep(0.3)
    assert registry.states(3) == []
    wait_for(lambda: registry.states(3) == [S.INSTANCE_STATE_RUNNING], timeout=5,
             what="vm3's report once its hold ended")
    drv.start_vm(spec(4))  # no call answers it (as a VM started outside the CM): at once
    wait_for(lambda: registry.states(4) == [S.INSTANCE_STATE_RUNNING], timeout=0.5,
             what="vm4 reported at once")
    rep.answered_hold_seconds = 30.0
    servicer.StartVm(_start_request(5), None)
    drv.pause_vm(5)  # as the CM asks after the start's answer: the held report goes no more
    wait_for(lambda: registry.states(5) == [S.INSTANCE_STATE_PAUSED], timeout=2,
             what="vm5's pause reported, without the start its answer told")


def test_held_reports_the_cm_refuses_are_tried_again_without_spinning(
        setup: tuple[LibvirtDriver, Registry, server.Running, Reporter]) -> None:
    """Once a hold has ended and the send failed, the reporter waits for its retry
    (bench_fleet caught it spinning until then: 1,000 hosts' worth of CPU)."""
    drv, registry, _running, rep = setup
    servicer = NodeManagerServicer(drv, stamp=rep.clock.next, answering=rep.answering)
    rep.answered_hold_seconds = 0.1
    rep.heartbeat_seconds = 1.0  # a failed send is tried again after 1 s
    rep.start()
    wait_for(lambda: registry.registrations, what="registration")
    registry.refuse_reports = True
    servicer.StartVm(_start_request(1), None)
    time.sleep(0.3)  # the hold is over and the first send refused
    before = time.process_time()
    time.sleep(1.5)
    spent = time.process_time() - before
    assert spent < 0.5, f"{spent:.2f} CPU-s in 1.5 s while waiting to send again"
    registry.refuse_reports = False
    wait_for(lambda: registry.states(1) == [S.INSTANCE_STATE_RUNNING], timeout=5,
             what="the held report once the CM takes it")
