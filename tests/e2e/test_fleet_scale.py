"""The control plane at CI size (issue 16): a real `tashi-cm` and `tashi-scheduler`
against 100 simulated hosts, each a real node manager (bench/fleet.py: its own
libvirt test-driver connection, reporter and NodeManagerService), filled to
2,000 VMs.  Checked: no host ever overcommitted (the replayed history), every
VM accounted for (Running on exactly one host, the CM's, whose libvirt lists
it), the heartbeats heard by the CM's liveness process (cm/beats.py), ten
hosts frozen at once all marked down and their VMs Orphaned within expire +
one heartbeat + slack, then all reconciled with none lost; and a host
whose node manager stops and starts again in place gets its VMs back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.bench_scheduler import history, overcommitted
from bench.fleet import Fleet
from bench.fleet_checks import ORPHANED, RUNNING, Tracker, accounted, failure_drill
from tashi.runtime.client import ClusterClient
from tests.harness import (
    CMProcess,
    SchedulerProcess,
    metrics_address,
    scrape,
    stop_all,
    vm,
    wait_for,
)

pytestmark = [pytest.mark.slow]

HOSTS, VMS, FROZEN = 100, 2000, 10
EXPIRE, HEARTBEAT = 4.0, 1.0
# The liveness monitor looks every 0.5 s; a loaded 2-core machine adds the rest.
SLACK = 3.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[CMProcess, Fleet, ClusterClient]]:
    cm = CMProcess(tmp_path, images=str(tmp_path), quota_instances=0, log_level="INFO",
                   expire_host_seconds=EXPIRE, metrics_listen="127.0.0.1:0")
    fleet = Fleet(cm.address, HOSTS, 4, tmp_path / "fleet", cores=32, memory_mib=32768,
                  heartbeat_seconds=HEARTBEAT, isolate=FROZEN)
    sched = None
    client = ClusterClient(cm.address, timeout=60)
    try:
        fleet.start()
        fleet.wait_up(client)
        sched = SchedulerProcess(tmp_path, cm.address, "--log-level", "WARNING")
        yield cm, fleet, client
    finally:
        client.close()
        fleet.stop()
        stop_all(sched, cm)


def test_fleet_at_ci_scale(cluster: tuple[CMProcess, Fleet, ClusterClient]) -> None:
    cm, fleet, client = cluster
    client.create_user("alice")
    alice = cm.client("alice")
    tracker = Tracker(client, client.last_seq())
    tracker.start()
    try:
        ids: list[int] = []
        for start in range(0, VMS, 500):
            ids += [i.id for i in alice.create_instances(vm(f"v{start}", memory_mib=1024),
                                                         count=500)]
        assert tracker.wait(lambda: all(tracker.state.get(i) == RUNNING for i in ids), 120), \
            f"{tracker.count(ids, RUNNING)} of {VMS} Running after 120 s"

        # Every VM accounted for, and no host ever held more than its capacity.
        assert accounted(client, fleet) == []
        assert overcommitted(history(client)) == 0
        hosts = client.list_hosts()
        assert len(hosts) == HOSTS and all(h.up for h in hosts)
        assert sum(h.used_memory_mib for h in hosts) == VMS * 1024
        # From 50 hosts on, their heartbeats go to the CM's liveness process (cm/beats.py).
        # (Waited for: a fill that ends before every host beat twice leaves it at HOSTS.)
        wait_for(lambda: scrape(metrics_address(cm)).get(("tashi_cm_beats_total", ()), 0)
                 > HOSTS, timeout=30, what="more beats heard by the liveness process than hosts")

        # Ten hosts go silent at once (SIGSTOP of their process).
        drill = failure_drill(client, fleet, fleet.groups[-1], tracker, timeout=60)
        assert drill.hosts == FROZEN and drill.vms > 0
        bound = EXPIRE + HEARTBEAT + SLACK
        assert drill.down_s <= bound, drill
        assert drill.orphaned_s <= bound, drill
        assert drill.back_s < 30 and drill.lost == 0, drill
        assert accounted(client, fleet) == []

        # One node manager stopped and started again in place: its VMs come back.
        name = fleet.groups[0].names[0]
        host = client.get_host(name)
        mine = [i.id for i in client.list_instances(host_id=host.id)]
        assert mine
        fleet.halt([name])
        assert tracker.wait(lambda: all(tracker.state.get(i) == ORPHANED for i in mine),
                            EXPIRE + HEARTBEAT + SLACK + 5)
        t = time.perf_counter()
        fleet.resume([name])
        assert tracker.wait(lambda: all(tracker.state.get(i) == RUNNING for i in mine), 30)
        assert time.perf_counter() - t < 30
        assert fleet.vms([name])[name] == sorted(mine)
        assert accounted(client, fleet) == []
        assert overcommitted(history(client)) == 0
    finally:
        tracker.cancel()
        alice.close()
