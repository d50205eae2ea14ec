"""The scheduler's metrics: a real agent against an in-process CM, scraped over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.runtime.client import ClusterClient
from tashi.scheduler import metrics
from tashi.scheduler.agent import Agent
from tashi.scheduler.config import SchedulerConfig
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, Samples, register_host, scrape, wait_for


@pytest.fixture
def cm(tmp_path: Path) -> Iterator[InProcCM]:
    cm = InProcCM(tmp_path, expire_host_seconds=3600.0)
    cm.client().create_user("alice")
    try:
        yield cm
    finally:
        cm.stop()



def one(samples: Samples, name: str) -> float | None:
    return samples.get((name, ()))


def test_placements_holds_latency_and_lag(cm: InProcCM) -> None:
    root, alice = cm.client(), cm.client("alice")
    register_host(root, "h0", cores=2, memory_mib=4096)
    client = ClusterClient(cm.address)
    agent = Agent(client, SchedulerConfig(resync_seconds=3600, ip_allocator=False))
    served = metrics.serve(agent, "127.0.0.1:0")
    worker = threading.Thread(target=agent.run, daemon=True)
    worker.start()
    try:
        alice.create_instances(
            pb.Instance(name="web", spec=pb.InstanceSpec(cores=1, memory_mib=1024)), count=3)
        held = pb.INSTANCE_STATE_HELD
        wait_for(lambda: sum(i.status.state == held for i in alice.list_instances()) == 1,
                 what="the VM that does not fit held")
        s = wait_for(lambda: (s := scrape(served.address))
                     and one(s, "tashi_scheduler_held_instances") == 1 and s,
                     what="the scheduler seeing the held VM")
        assert one(s, "tashi_scheduler_placements_total") == 2
        assert one(s, "tashi_scheduler_holds_total") == 1
        assert one(s, "tashi_scheduler_proposals_total") == (
            one(s, "tashi_scheduler_placements_total")
            + one(s, "tashi_scheduler_conflicts_total"))  # type: ignore[operator]
        # Decision latency: one observation per VM placed, none for the held one.
        assert one(s, "tashi_scheduler_decision_latency_seconds_count") == 2
        assert 0 < one(s, "tashi_scheduler_decision_latency_seconds_sum") < 10  # type: ignore[operator]
        assert one(s, "tashi_scheduler_pending_instances") == 0
        assert one(s, "tashi_scheduler_cm_connected") == 1
        assert one(s, "tashi_scheduler_cm_disconnects_total") == 0
        cm_seq = root.call(root.cm.ListHosts, cmpb.ListHostsRequest()).seq
        s = wait_for(lambda: (s := scrape(served.address))
                     and one(s, "tashi_scheduler_event_sequence") == cm_seq and s,
                     what="the scheduler caught up")
        assert one(s, "tashi_scheduler_lag_events") == 0
        assert one(s, "tashi_scheduler_relists_total") == 1
    finally:
        agent.stop()
        worker.join(10)
        served.stop()
        client.close()

    # With the CM gone the lag cannot be known: it is left out, the rest still answers.
    cm.stop()
    probe = metrics.SchedulerCollector(agent, probe_seconds=0.5)
    names = {m.name for m in probe.collect()}
    assert "tashi_scheduler_lag_events" not in names
    assert "tashi_scheduler_event_sequence" in names


def test_off_without_an_address(cm: InProcCM) -> None:
    client = ClusterClient(cm.address)
    agent = Agent(client, SchedulerConfig())
    served = metrics.serve(agent, "")
    assert served.address == "" and not served.enabled
    assert len(agent.hooks.hooks) == 1  # the IP allocator only: no timing hook
    client.close()
