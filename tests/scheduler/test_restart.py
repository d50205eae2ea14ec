"""A scheduler killed mid-stream and started again misses nothing and places nothing twice."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

from tashi.v1 import resources_pb2 as pb
from tests.harness import SchedulerProcess, start_cm, stop_all, wait_states
from tests.scheduler.support import activations, add_hosts, history, overcommits, spec

ACTIVATING = pb.INSTANCE_STATE_ACTIVATING
NIC = [pb.Nic(network_id=1)]


def test_killed_scheduler_restarts_without_misses_or_doubles(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    cm = start_cm(tmp_path, images=str(tmp_path / "images"), expire_host_seconds=3600)
    sched: SchedulerProcess | None = None
    try:
        root = cm.client()
        root.create_user("alice")
        alice = cm.client("alice")
        root.create_network(pb.Network(id=1, name="lan", cidr="10.1.0.0/21"))
        add_hosts(root, [(64, 65536)] * 20)
        sched = SchedulerProcess(tmp_path, cm.address, "--batch-size", "100", name="first")
        alice.create_instances(spec("warm", nics=NIC), count=100)
        wait_states(root, activating=100)

        alice.create_instances(spec("mid", nics=NIC), count=1000)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # kill it in the middle of placing them
            placed = sum(h.instance_count for h in root.list_hosts())
            if placed > 100:
                break
        sched.kill()
        stop_all(sched)
        placed_at_kill = sum(h.instance_count for h in root.list_hosts())
        assert 100 < placed_at_kill < 1100, placed_at_kill

        alice.create_instances(spec("while-down", nics=NIC), count=100)  # nobody listens
        time.sleep(0.3)
        assert sum(h.instance_count for h in root.list_hosts()) == placed_at_kill

        sched = SchedulerProcess(tmp_path, cm.address, "--batch-size", "100", name="second")
        alice.create_instances(spec("late", nics=NIC), count=50)
        wait_states(root, activating=1250)

        insts = root.list_instances()
        ips = [i.status.nics[0].ip for i in insts]
        net = ipaddress.ip_network("10.1.0.0/21")
        assert len(set(ips)) == len(insts) == 1250  # no address given twice
        assert all(ipaddress.ip_address(ip) in net for ip in ips)
        events = history(root)
        placed_times = activations(events)
        assert len(placed_times) == 1250 and set(placed_times.values()) == {1}
        assert overcommits(events) == []
    finally:
        stop_all(sched, cm)
