"""The cluster manager's metrics, scraped over HTTP from an in-process CM on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.runtime.auth import user_metadata
from tashi.runtime.client import ClusterClient
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import placement_pb2 as pl
from tests.harness import InProcCM, Samples, register_host, vm, wait_for
from tests.harness import scrape as scrape_metrics

MIB = 1024 * 1024

@pytest.fixture
def cm(tmp_path: Path) -> Iterator[InProcCM]:
    cm = InProcCM(tmp_path, metrics_listen="127.0.0.1:0", expire_host_seconds=1.5)
    cm.client().create_user("alice")
    cm.client().create_user("bob")
    try:
        yield cm
    finally:
        cm.stop()


def scrape(cm: InProcCM) -> Samples:
    return scrape_metrics(cm.cm.metrics.address)


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def create(client: ClusterClient, name: str, count: int = 0, memory: int = 512) -> None:
    client.create_instances(vm(name, 1, memory), count=count)


def test_hosts_instances_and_events(cm: InProcCM) -> None:
    root, alice, bob = cm.client(), cm.client("alice"), cm.client("bob")
    register_host(root, "node1", cores=8, memory_mib=16384)
    create(alice, "web", count=3)
    create(bob, "db", memory=2048)
    s = scrape(cm)
    assert get(s, "tashi_cm_hosts", status="up") == 1
    assert get(s, "tashi_cm_host_up", host="node1") == 1
    assert get(s, "tashi_cm_host_cores", host="node1") == 8
    assert get(s, "tashi_cm_host_memory_bytes", host="node1") == 16384 * MIB
    assert get(s, "tashi_cm_host_last_heartbeat_timestamp_seconds", host="node1") == \
        pytest.approx(time.time(), abs=5)
    assert get(s, "tashi_cm_instances", state="Pending", owner="alice") == 3
    assert get(s, "tashi_cm_instances", state="Pending", owner="bob") == 1
    assert get(s, "tashi_cm_instances_by_state", state="Pending") == 4
    assert get(s, "tashi_cm_instances_by_state", state="Held") == 0
    last = root.call(root.cm.ListHosts, cmpb.ListHostsRequest()).seq
    assert get(s, "tashi_cm_event_sequence") == last
    assert get(s, "tashi_cm_watchers") == 0

    # Placement: one VM on node1 (allocated), one held with a reason.
    insts = {i.name: i for i in root.list_instances()}
    resp = root.activate([pl.Placement(instance_id=insts["db"].id, host_id=1)])
    assert resp.results[0].accepted, resp
    before_hold = time.time()
    root.hold([pl.Hold(instance_id=insts["web-0"].id, reason="fits nowhere")])
    s = scrape(cm)
    assert get(s, "tashi_cm_instances", state="Held", owner="alice") == 1
    assert get(s, "tashi_cm_instances", state="Pending", owner="alice") == 2
    assert get(s, "tashi_cm_instances", state="Activating", owner="bob") == 1
    assert get(s, "tashi_cm_host_allocated_cores", host="node1") == 1
    assert get(s, "tashi_cm_host_allocated_memory_bytes", host="node1") == 2048 * MIB
    held_since = get(s, "tashi_cm_instances_oldest_update_timestamp_seconds", state="Held")
    assert held_since is not None and before_hold - 1 <= held_since <= time.time()
    assert get(s, "tashi_cm_event_sequence") > last  # type: ignore[operator]


def test_watchers_and_a_host_going_down(cm: InProcCM) -> None:
    root = cm.client()
    register_host(root, "node1")
    stream = root.cm.WatchEvents(cmpb.WatchEventsRequest(since=0),
                                 metadata=user_metadata("root"))
    next(stream)
    assert get(scrape(cm), "tashi_cm_watchers") == 1
    # No heartbeat: the liveness monitor marks the host down after 1.5 s.
    wait_for(lambda: get(scrape(cm), "tashi_cm_host_up", host="node1") == 0, timeout=10,
             what="node1 down")
    s = scrape(cm)
    assert get(s, "tashi_cm_hosts", status="down") == 1
    assert get(s, "tashi_cm_hosts", status="up") == 0
    stream.cancel()
    wait_for(lambda: get(scrape(cm), "tashi_cm_watchers") == 0, what="the watcher gone")
    svc = "tashi.v1.ClusterManagerService"
    assert get(scrape(cm), "grpc_server_handled_total", grpc_type="server_stream",
               grpc_service=svc, grpc_method="WatchEvents", grpc_code="Canceled") == 1


def test_grpc_calls_of_the_cm_are_counted(cm: InProcCM) -> None:
    alice = cm.client("alice")
    alice.list_instances()
    with pytest.raises(Exception, match="NOT_FOUND"):
        alice.get_instance("nope")
    s = scrape(cm)
    svc = "tashi.v1.ClusterManagerService"
    assert get(s, "grpc_server_handled_total", grpc_type="unary", grpc_service=svc,
               grpc_method="GetInstance", grpc_code="NotFound") == 1
    assert get(s, "grpc_server_handled_total", grpc_type="unary", grpc_service=svc,
               grpc_method="ListInstances", grpc_code="OK") == 1
    assert get(s, "grpc_server_handling_seconds_count", grpc_type="unary", grpc_service=svc,
               grpc_method="ListInstances") == 1


def test_commit_turns_and_their_waits_are_measured(cm: InProcCM) -> None:
    """A change that holds the lock 0.3 s shows as one turn above 0.25 s, and the
    call queued behind it as a wait above 0.1 s."""
    def delta(name: str, le: str, **labels: str) -> float:
        return (get(after, f"{name}_bucket", le=le, **labels) or 0) - (
            get(before, f"{name}_bucket", le=le, **labels) or 0)

    before = scrape(cm)
    slow = threading.Thread(target=cm.cluster.write,
                            args=("root", lambda txn: time.sleep(0.3)))
    slow.start()
    time.sleep(0.1)
    cm.client().create_user("carol")  # queued while the slow turn holds the lock
    slow.join()
    after = scrape(cm)
    turns, waits = "tashi_cm_commit_turn_seconds", "tashi_cm_commit_wait_seconds"
    assert delta(turns, "0.5") - delta(turns, "0.25") == 1
    assert delta(waits, "+Inf", change="call") - delta(waits, "0.1", change="call") == 1
    assert delta(waits, "+Inf", change="own") >= 1 and delta(turns, "+Inf") >= 2
    assert (get(after, f"{turns}_sum") or 0) - (get(before, f"{turns}_sum") or 0) >= 0.3
