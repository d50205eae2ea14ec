"""Cluster manager failover on PostgreSQL (issue 15), with real processes: two
`tashi-cm` on one private PostgreSQL, a scheduler and two node managers given
both addresses.  The leader is SIGKILLed in the middle of creates and destroys
driven with request ids; the standby takes over, every client follows, the
final state is exactly what was acknowledged, a watcher sees every event once
and in order, no host is overcommitted.  Then a paused (SIGSTOPped) leader
that wakes after a takeover cannot write."""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.bench_scheduler import history
from tashi.cm.pgstore import LeaseLost, PostgresStore
from tashi.cm.store import Batch, StoreError
from tashi.runtime.accounting_client import AccountingClient
from tashi.runtime.client import ClusterClient, TashiError
from tashi.runtime.rpc import channel
from tashi.v1 import accounting_pb2 as apb
from tashi.v1 import resources_pb2 as pb
from tests import pg
from tests.harness import (
    CMProcess,
    NMProcess,
    SchedulerProcess,
    free_port,
    metrics_address,
    scrape,
    start_accounting,
    stop_all,
    vm,
    wait_for,
)

pytestmark = [pytest.mark.slow]

EITHER = re.compile(r"(?:listening on|standby on) (\S+:\d+)")
LEASE = 1.5


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    yield pg.server().database(str(tmp_path))


def start(tmp_path: Path, db: str, port: int, name: str, **flags: object) -> CMProcess:
    address = f"127.0.0.1:{port}"
    return CMProcess(tmp_path, db=db, listen=address, advertise=address, lease_seconds=LEASE,
                     expire_host_seconds=30, ready=EITHER, log_name=f"{name}.log", **flags)


def leads(proc: CMProcess) -> bool:
    return any("listening on" in line for line in proc.lines)


def health(address: str) -> int:
    ch = channel(address)
    try:
        return health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5).status
    finally:
        ch.close()


class Watcher(threading.Thread):
    """Watches from seq 0 across failovers, resuming from the last seq seen."""

    def __init__(self, addresses: str) -> None:
        super().__init__(daemon=True)
        self.client = ClusterClient(addresses, timeout=10)
        self.seqs: list[int] = []
        self.events: list[pb.Event] = []
        self.stopping = threading.Event()
        self.stream = None

    def run(self) -> None:
        since = 0
        while not self.stopping.is_set():
            try:
                self.stream = self.client.watch_events(since)
                for events in self.stream:
                    self.seqs.extend(e.seq for e in events)
                    self.events.extend(events)
                    since = self.stream.seq
                    if self.stopping.is_set():
                        return
            except TashiError:
                time.sleep(0.1)

    def stop(self) -> None:
        self.stopping.set()
        if self.stream is not None:
            self.stream.cancel()
        self.join(10)
        self.client.close()


def test_sigkill_the_leader_mid_run(tmp_path: Path, db: str) -> None:
    pa, pb_ = free_port(), free_port()
    a = start(tmp_path, db, pa, "cm-a")
    b = start(tmp_path, db, pb_, "cm-b")
    procs: list[object] = [a, b]
    watcher: Watcher | None = None
    try:
        assert leads(a) and not leads(b)
        both = f"127.0.0.1:{pa},127.0.0.1:{pb_}"
        assert health(f"127.0.0.1:{pb_}") == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(TashiError) as err:
            ClusterClient(f"127.0.0.1:{pb_}", timeout=5).list_instances()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert f"the leader is 127.0.0.1:{pa}" in err.value.message

        client = ClusterClient(both, timeout=20)
        for name in ("n1", "n2"):
            client.create_host(name)
            procs.append(NMProcess(tmp_path / name, both, name, cores=512, memory_mib=65536))
        wait_for(lambda: all(h.up for h in client.list_hosts()), 20, what="NMs up")
        procs.append(SchedulerProcess(tmp_path, both))
        accounting = start_accounting(tmp_path, both)
        procs.append(accounting)
        watcher = Watcher(both)
        watcher.start()

        rng = random.Random(3)
        acked: set[str] = set()
        killed_at = 0.0
        for i in range(1000):
            if i == 400:  # the leader dies mid-run
                a.kill()
                killed_at = time.monotonic()
            if acked and rng.random() < 0.3:
                name = sorted(acked)[rng.randrange(len(acked))]
                try:
                    client.instance_action("Delete", name, request_id=f"op-{i}")
                except TashiError as exc:  # already going: an earlier try got through
                    assert exc.code in (grpc.StatusCode.NOT_FOUND,
                                        grpc.StatusCode.FAILED_PRECONDITION), exc
                acked.discard(name)
            else:
                name = f"v{i}"
                client.create_instances(vm(name, 1, 64), request_id=f"op-{i}")
                acked.add(name)
        assert killed_at and leads(b), "the standby took over"

        def settled() -> bool:
            insts = client.list_instances()
            live = {i.name for i in insts if i.status.state != pb.INSTANCE_STATE_DESTROYING}
            return live == acked and all(
                i.status.state == pb.INSTANCE_STATE_RUNNING for i in insts)
        try:
            wait_for(settled, 60, what="exactly the acknowledged instances, all Running")
        except AssertionError:  # say what differs
            insts = client.list_instances()
            live = {i.name for i in insts if i.status.state != pb.INSTANCE_STATE_DESTROYING}
            raise AssertionError(f"missing {sorted(acked - live)[:5]} extra "
                                 f"{sorted(live - acked)[:5]} states "
                                 f"{Counter(i.status.state for i in insts)} "
                                 f"{[i.status.reason for i in insts][:3]}") from None
        for host in client.list_hosts():
            assert host.used_cores <= host.cores and host.used_memory_mib <= host.memory_mib
        time.sleep(0.5)
        seqs = watcher.seqs
        assert seqs == list(range(1, len(seqs) + 1)), "every event once, in order, no gap"
        flaps = [e for e in watcher.events
                 if (e.type == pb.EVENT_TYPE_HOST_UPDATED and not e.host.up)
                 or (e.WhichOneof("subject") == "instance"
                     and e.instance.status.state == pb.INSTANCE_STATE_ORPHANED)]
        assert not flaps, f"a takeover flaps nothing: {flaps[:2]}"
        # Each instance's history is one an uninterrupted run gives: forward through
        # Pending, Activating, Running, Destroying, Exited, never back or aside (a
        # start landing after its delete is ended on the host, never adopted back).
        order = [pb.INSTANCE_STATE_PENDING, pb.INSTANCE_STATE_ACTIVATING,
                 pb.INSTANCE_STATE_RUNNING, pb.INSTANCE_STATE_DESTROYING,
                 pb.INSTANCE_STATE_EXITED]
        paths: dict[int, list[int]] = {}
        for e in watcher.events:
            if e.WhichOneof("subject") == "instance":
                paths.setdefault(e.instance.id, []).append(e.instance.status.state)
        for iid, path in paths.items():
            ranks = [order.index(st) if st in order else -1 for st in path]
            assert -1 not in ranks and ranks == sorted(ranks), (iid, path)
        last = client.list_instances_at()[2]
        assert seqs[-1] == last, "the watcher is at the end"
        ledger = AccountingClient(accounting.address, timeout=10)

        def ledger_seqs() -> list[int]:
            return [e.event.seq for e in ledger.list_events(apb.ListEventsRequest(
                page_size=5000)) if e.kind == apb.LEDGER_ENTRY_KIND_EVENT]
        wait_for(lambda: (got := ledger_seqs()) and got[-1] == last, 20, what="ledger caught up")
        entries = list(ledger.list_events(apb.ListEventsRequest(page_size=5000)))
        assert all(e.kind == apb.LEDGER_ENTRY_KIND_EVENT for e in entries), "no gap, no drift"
        assert ledger_seqs() == list(range(1, last + 1)), "the CM's history, each event once"
        ledger.close()
    finally:
        if watcher is not None:
            watcher.stop()
        stop_all(*reversed(procs))  # type: ignore[arg-type]


@pytest.mark.parametrize("between", ["statements", "pipelined statements"])
def test_a_leader_paused_inside_a_transaction_does_not_hold_off_the_standby(
        db: str, between: str) -> None:
    """SIGSTOP can land while the leader's commit holds the lease row's lock; the
    standby must still take over about a lease later, not when the leader wakes.
    Between statements PostgreSQL's idle-in-transaction timeout ends the session;
    inside a pipeline (executemany) that timeout is not armed, and the standby
    ends the session itself: modelled here by turning the timeout off."""
    a, b = PostgresStore(db, lease_seconds=1.0), PostgresStore(db, lease_seconds=1.0)
    try:
        assert a.try_lead("a") and not b.try_lead("b")
        a.commit(Batch(meta={"n": 1}))
        if between == "pipelined statements":
            a._db.execute("SET idle_in_transaction_session_timeout = 0")
        paused = a._db.transaction()  # what a commit holds when the process is stopped
        paused.__enter__()
        with a._db.cursor() as cur:
            a._extend(cur)
        began = time.monotonic()
        wait_for(lambda: b.try_lead("b"), 6, what="the standby took the lease")
        took = time.monotonic() - began
        assert took < 1.0 + 2.0, f"takeover took {took:.1f} s"
        with pytest.raises(Exception):  # noqa: B017 - PostgreSQL ended the session
            paused.__exit__(None, None, None)
        with pytest.raises(LeaseLost):  # the woken one reconnects and finds it deposed
            a.renew()
        with pytest.raises(LeaseLost):
            a.commit(Batch(meta={"n": 2}))
        b.commit(Batch(meta={"n": 3}))
        assert b.load(10).meta["n"] == 3
    finally:
        a.close()
        b.close()


def test_a_leader_whose_session_ended_reconnects_and_keeps_its_lease(db: str) -> None:
    a, b = PostgresStore(db, lease_seconds=5.0), PostgresStore(db, lease_seconds=5.0)
    try:
        assert a.try_lead("a")
        pid = a._db.info.backend_pid
        b._db.execute("SELECT pg_terminate_backend(%s)", (pid,))  # a restart, say
        with pytest.raises(StoreError):  # the first use finds the session gone
            a.renew()
        a.renew()
        a.commit(Batch(meta={"n": 1}))
        assert a._db.info.backend_pid != pid
        assert not b.try_lead("b") and b.leader() == "a"
        assert b.load(10).meta["n"] == 1
    finally:
        a.close()
        b.close()


def test_a_paused_leader_cannot_write_after_it_wakes(tmp_path: Path, db: str) -> None:
    pa, pb_ = free_port(), free_port()
    a = start(tmp_path, db, pa, "cm-a")
    b = start(tmp_path, db, pb_, "cm-b")
    try:
        alone = ClusterClient(f"127.0.0.1:{pa}", timeout=5)
        alone.create_instances(vm("before", 1, 64))
        a.proc.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        wait_for(lambda: leads(b), 15, what="the standby took over")
        took = time.monotonic() - paused
        assert took < LEASE + 3, f"takeover took {took:.1f} s"
        fresh = ClusterClient(f"127.0.0.1:{pb_}", timeout=5)
        fresh.create_instances(vm("after", 1, 64))
        a.proc.send_signal(signal.SIGCONT)
        with pytest.raises(TashiError):  # the woken leader writes nothing
            alone.create_instances(vm("stale", 1, 64))
        a.proc.wait(10)
        assert a.proc.returncode == 75, "a deposed leader stops"
        names = {i.name for i in fresh.list_instances()}
        assert names == {"before", "after"}
    finally:
        for p in (a, b):
            if p.alive():
                p.proc.send_signal(signal.SIGCONT)
        stop_all(b, a)


def beats_at(proc: CMProcess) -> float:
    return scrape(metrics_address(proc)).get(("tashi_cm_beats_total", ()), 0.0)


def test_hosts_beating_a_paused_leaders_liveness_process_find_the_new_leader(
        tmp_path: Path, db: str) -> None:
    """A node manager beats the leader's liveness process (cm/beats.py).  The leader
    is paused (SIGSTOP): its process, still running, turns the beats away once the
    leader's pulse is older than the lease, so the node manager beats the CMs
    themselves, finds the new leader, and then beats the new leader's process;
    its host never goes down."""
    pa, pb_ = free_port(), free_port()
    flags = {"beat_listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0"}
    a = start(tmp_path, db, pa, "cm-a", **flags)
    b = start(tmp_path, db, pb_, "cm-b", **flags)
    both = f"127.0.0.1:{pa},127.0.0.1:{pb_}"
    nm = None
    try:
        root = ClusterClient(both, timeout=10)
        root.create_host("h1")
        nm = NMProcess(tmp_path / "nm", both, "h1", heartbeat_seconds=0.3)
        wait_for(lambda: root.get_host("h1").up, what="h1 up")
        wait_for(lambda: beats_at(a) > 5, timeout=20, what="beats at the leader's process")
        a.proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: leads(b), 15, what="the standby took over")
        wait_for(lambda: beats_at(b) > 5, timeout=40,
                 what="beats at the new leader's liveness process")
        leader = ClusterClient(f"127.0.0.1:{pb_}", timeout=10)  # `root` waits on a
        assert leader.get_host("h1").up
        downs = [e for e in history(leader)
                 if e.type == pb.EVENT_TYPE_HOST_UPDATED and not e.host.up]
        assert not downs, [e.message for e in downs]
        assert "heartbeats go to the cluster manager itself" in nm.log_path.read_text()
    finally:
        if a.alive():
            a.proc.send_signal(signal.SIGCONT)
        stop_all(nm, b, a)
