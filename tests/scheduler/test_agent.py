"""The agent against a real cluster manager over gRPC (in-process CM, synthetic hosts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.cm.eventlog import EventLog
from tashi.runtime.client import ClusterClient
from tashi.scheduler.agent import Agent
from tashi.scheduler.config import SchedulerConfig
from tashi.scheduler.hooks import Hook, PreCreate
from tashi.scheduler.model import HostView, VmSpec
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, running_agent, wait_for
from tests.scheduler.support import add_hosts, report, spec

ACTIVATING, HELD = pb.INSTANCE_STATE_ACTIVATING, pb.INSTANCE_STATE_HELD


@pytest.fixture
def cmx(tmp_path: Path) -> Iterator[InProcCM]:
    cm = InProcCM(tmp_path, expire_host_seconds=3600.0)
    cm.client().create_user("alice")
    try:
        yield cm
    finally:
        cm.stop()


def by_name(client: ClusterClient) -> dict[str, pb.Instance]:
    return {i.name: i for i in client.list_instances()}


def test_places_holds_with_a_reason_and_places_held_when_a_host_arrives(cmx: InProcCM) -> None:
    root, alice = cmx.client(), cmx.client("alice")
    add_hosts(root, [(2, 4096), (2, 4096)])
    with running_agent(cmx.address, resync_seconds=3600) as agent:
        alice.create_instances(spec("vm"), count=5)
        insts = wait_for(lambda: [i for i in alice.list_instances() if i.status.state == HELD],
                         what="one VM held")
        assert len(insts) == 1
        assert insts[0].status.reason == \
            "fits on no host (needs 1 cores, 1024 MiB): 2 hosts not enough free cores"
        assert sum(i.status.state == ACTIVATING for i in alice.list_instances()) == 4
        layout = {h.name: h.instance_count for h in root.list_hosts()}
        assert layout == {"h0": 2, "h1": 2}  # spread
        add_hosts(root, [(1, 1024)], start=2)
        placed = wait_for(lambda: root.get_instance(insts[0].id).status.host_name == "h2" or None,
                          what="the held VM placed on the new host")
        assert placed
        assert agent.stats.sessions == 1  # by the event, not by a relist


def test_a_vm_going_away_lets_a_held_one_in(cmx: InProcCM) -> None:
    root, alice = cmx.client(), cmx.client("alice")
    add_hosts(root, [(1, 2048)])
    with running_agent(cmx.address, resync_seconds=3600):
        alice.create_instances(spec("a"))
        first = wait_for(lambda: by_name(alice)["a"].status.state == ACTIVATING
                         and by_name(alice)["a"])
        alice.create_instances(spec("b"))
        wait_for(lambda: by_name(alice)["b"].status.state == HELD, what="b held")
        report(root, "h0", first.id, pb.INSTANCE_STATE_EXITED)
        wait_for(lambda: by_name(alice)["b"].status.state == ACTIVATING, what="b placed")


def test_hints_reach_the_cm(cmx: InProcCM) -> None:
    root, alice = cmx.client(), cmx.client("alice")
    add_hosts(root, [(4, 8192)] * 3)
    with running_agent(cmx.address):
        alice.create_instances(spec("pinned", hints={"targetHost": "h2"}))
        alice.create_instances(spec("nowhere", hints={"targetHost": "h9"}))
        alice.create_instances(spec("db", group_name="db"), count=4)  # createMany --group db
        alice.create_instances(spec("free", group_name="free", hints={"antiAffinity": "False"}),
                               count=4)
        alice.create_instances(spec("web", hints={"antiAffinityGroup": "web"}), count=3)
        wait_for(lambda: all(i.status.state in (ACTIVATING, HELD) for i in alice.list_instances())
                 and len(alice.list_instances()) == 13, what="all decided")
        insts = by_name(alice)
        assert insts["pinned"].status.host_name == "h2"
        assert insts["nowhere"].status.state == HELD
        assert insts["nowhere"].status.reason == "target host h9 does not exist"
        db_hosts = [i.status.host_name for n, i in insts.items()
                    if n.startswith("db-") and i.status.host_id]
        assert sorted(db_hosts) == ["h0", "h1", "h2"]  # one group member per host
        held_db = [i for n, i in insts.items() if n.startswith("db-") and i.status.state == HELD]
        assert len(held_db) == 1 and "anti-affinity group db" in held_db[0].status.reason
        web_hosts = [i.status.host_name for n, i in insts.items() if n.startswith("web-")]
        assert sorted(web_hosts) == ["h0", "h1", "h2"]
        assert all(i.status.state == ACTIVATING for n, i in insts.items() if n.startswith("free-"))


def test_dense_pack_by_hint(cmx: InProcCM) -> None:
    root, alice = cmx.client(), cmx.client("alice")
    add_hosts(root, [(4, 8192)] * 3)
    with running_agent(cmx.address):
        alice.create_instances(spec("p", hints={"densePack": "True"}), count=6)
        wait_for(lambda: sum(i.status.state == ACTIVATING for i in alice.list_instances()) == 6)
        counts = sorted(h.instance_count for h in root.list_hosts())
        assert counts == [0, 2, 4]


def test_addresses_from_the_network_range_given_and_released(cmx: InProcCM) -> None:
    root, alice = cmx.client(), cmx.client("alice")
    root.create_network(pb.Network(id=11, name="lan", cidr="10.11.0.0/29"))  # .2 - .6
    add_hosts(root, [(8, 16384)])
    nic = [pb.Nic(network_id=11)]
    with running_agent(cmx.address, resync_seconds=3600):
        alice.create_instances(spec("n", nics=nic), count=6)
        wait_for(lambda: sum(i.status.state in (ACTIVATING, HELD)
                             for i in alice.list_instances()) == 6)
        insts = sorted(alice.list_instances(), key=lambda i: i.id)
        ips = [i.status.nics[0].ip for i in insts if i.status.state == ACTIVATING]
        assert sorted(ips) == [f"10.11.0.{n}" for n in range(2, 7)]
        held = [i for i in insts if i.status.state == HELD]
        assert len(held) == 1 and held[0].status.reason == \
            "network 11 (10.11.0.0/29) has no free address"
        gone = next(i for i in insts if i.status.nics[0].ip == "10.11.0.4")
        report(root, "h0", gone.id, pb.INSTANCE_STATE_EXITED)
        again = wait_for(lambda: root.get_instance(held[0].id).status.state == ACTIVATING
                         and root.get_instance(held[0].id), what="held VM placed")
        assert again.status.nics[0].ip == "10.11.0.4"


def test_a_failed_start_sends_the_vm_elsewhere_not_back(cmx: InProcCM) -> None:
    root, alice = cmx.client(), cmx.client("alice")
    add_hosts(root, [(4, 8192), (2, 4096)])
    with running_agent(cmx.address, start_failure_backoff_seconds=60):
        alice.create_instances(spec("f"))
        first = wait_for(lambda: by_name(alice)["f"].status.host_name == "h0"
                         and by_name(alice)["f"])
        report(root, "h0", first.id, pb.INSTANCE_STATE_HELD, "qemu exploded")
        moved = wait_for(lambda: by_name(alice)["f"].status.host_name == "h1"
                         and by_name(alice)["f"],
                         what="placed on the other host")
        assert moved.status.state == ACTIVATING
        report(root, "h1", first.id, pb.INSTANCE_STATE_HELD, "qemu exploded again")
        wait_for(lambda: by_name(alice)["f"].status.state == HELD, what="held")
        # Both hosts banned for a minute: it stays Held rather than bouncing.
        assert "exploded again" in by_name(alice)["f"].status.reason


def test_periodic_resync_places_nothing_twice(cmx: InProcCM) -> None:
    root, alice = cmx.client(), cmx.client("alice")
    add_hosts(root, [(4, 8192)] * 2)
    with running_agent(cmx.address, resync_seconds=0.2) as agent:
        alice.create_instances(spec("r"), count=8)
        wait_for(lambda: sum(i.status.state == ACTIVATING for i in alice.list_instances()) == 8)
        wait_for(lambda: agent.stats.sessions >= 4, what="a few resyncs")
        assert agent.stats.accepted == 8 and agent.stats.refused == 0


def test_out_of_range_starts_a_relist(cmx: InProcCM, monkeypatch: pytest.MonkeyPatch) -> None:
    """History pruned past the agent's seq while its watch is held up: the watch
    answers OUT_OF_RANGE, the agent relists and places what it never heard of."""
    root, alice = cmx.client(), cmx.client("alice")
    add_hosts(root, [(2, 4096)])
    gate = threading.Event()
    gate.set()
    real_read = EventLog.read_after

    def gated(log: EventLog, since: int, limit: int, timeout: float) -> list[pb.Event]:
        gate.wait()
        return real_read(log, since, limit, timeout)

    monkeypatch.setattr(EventLog, "read_after", gated)
    with running_agent(cmx.address, resync_seconds=3600) as agent:
        c = cmx.cluster
        wait_for(lambda: agent.seq == c.events.last_seq and agent.stats.sessions == 1 or None,
                 what="the agent caught up")
        gate.clear()
        time.sleep(1.2)  # a read in flight ends (1 s wait); the next waits at the gate
        alice.create_instances(spec("late"), count=2)
        with c.lock:
            c.cfg.event_retention = 1
            c._prune()
        gate.set()
        wait_for(lambda: all(i.status.state == ACTIVATING for i in alice.list_instances()) or None,
                 what="the VMs placed after the relist")
        assert agent.stats.sessions == 2


class Rival(Hook):
    """Acts as a second scheduler that wins the race for the host the agent chose:
    just before the agent proposes, it creates and places a VM filling that host."""

    def __init__(self, client: ClusterClient) -> None:
        self.client = client
        self.fired = False

    def pre_create(self, vm: VmSpec, host: HostView) -> PreCreate:
        if not self.fired:
            self.fired = True
            rival = self.client.create_instances(spec("rival", cores=host.free_cores))[0]
            answer = self.client.activate([pl.Placement(instance_id=rival.id, host_id=host.id)])
            assert answer.results[0].accepted
        return PreCreate()


def test_a_proposal_refused_for_capacity_is_retried_with_fresh_state(cmx: InProcCM) -> None:
    root = cmx.client()
    add_hosts(root, [(2, 4096), (1, 2048)])
    agent = Agent(cmx.client(), SchedulerConfig(cm=cmx.address), hooks=[Rival(cmx.client())])

    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        cmx.client("alice").create_instances(spec("x"))
        x = wait_for(lambda: by_name(root).get("x") if by_name(root).get("x") and
                     by_name(root)["x"].status.state == ACTIVATING else None, what="x placed")
        assert by_name(root)["rival"].status.host_name == "h0"
        assert x.status.host_name == "h1"  # not h0, which the rival filled
        assert agent.stats.refused == 1 and agent.stats.accepted == 1
        assert all(h.used_cores <= h.cores for h in root.list_hosts())
    finally:
        agent.stop()
        thread.join(10)
