"""WatchEvents filters and the shared informer, against an in-process CM over real gRPC."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tashi.runtime.auth import user_metadata
from tashi.runtime.client import ClusterClient
from tashi.runtime.informer import HOST, INSTANCE, NETWORK, Informer, Listing
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, register_host, vm, wait_for
from tests.scheduler.support import report


@pytest.fixture
def cmx(tmp_path: Path) -> Iterator[InProcCM]:
    cm = InProcCM(tmp_path, expire_host_seconds=3600.0)
    try:
        yield cm
    finally:
        cm.stop()


def collect(client: ClusterClient, until: int, **filters: object) -> tuple[list[pb.Event], int]:
    """Everything a filtered watch from 0 delivers until it has scanned past `until`."""
    got: list[pb.Event] = []
    with client.watch_events(0, **filters) as stream:  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while stream.seq < until:
            assert time.monotonic() < deadline, f"watch stuck at {stream.seq} < {until}"
            got.extend(next(stream))
        return got, stream.seq


def two_hosts_busy(root: ClusterClient) -> dict[str, int]:
    """Hosts a and b with one instance each; a's instance then fails to start and
    leaves a (Held, no host); a network is created last."""
    register_host(root, "a")
    register_host(root, "b")
    hosts = {h.name: h.id for h in root.list_hosts()}
    x, y = root.create_instances(vm("x", 1, 512), count=2)
    root.activate([pl.Placement(instance_id=x.id, host_id=hosts["a"]),
                   pl.Placement(instance_id=y.id, host_id=hosts["b"])])
    report(root, "a", x.id, pb.INSTANCE_STATE_HELD, "qemu failed")
    assert root.get_instance(x.id).status.host_id == 0
    root.create_network(pb.Network(id=7, name="n7"))
    return {"x": x.id, "y": y.id, **hosts}


def test_a_watch_filtered_to_a_host_sees_its_instances_leave_and_networks(
        cmx: InProcCM) -> None:
    root = cmx.client()
    ids = two_hosts_busy(root)
    last = cmx.cluster.events.last_seq
    everything, _ = collect(root, last)
    mine, seq = collect(root, last, host="a")
    assert seq == last  # moved past b's events too: a reconnect resumes from here

    def about(events: list[pb.Event]) -> set[tuple[str, int]]:
        return {(kind, getattr(e, kind).id) for e in events
                if (kind := e.WhichOneof("subject")) in ("host", "instance", "network")}

    assert about(mine) == {("host", ids["a"]), ("instance", ids["x"]), ("network", 7)}
    assert ("instance", ids["y"]) in about(everything)
    assert ("host", ids["b"]) in about(everything)
    # x's last event has it on no host: only its before-state ties it to a.
    x_events = [e for e in mine if e.WhichOneof("subject") == "instance"]
    assert x_events[-1].instance.status.state == pb.INSTANCE_STATE_HELD
    assert x_events[-1].instance.status.host_id == 0
    assert [e.seq for e in mine] == sorted(e.seq for e in mine)
    # The same host named by id filters the same.
    by_id, _ = collect(root, last, host=ids["a"])
    assert [e.seq for e in by_id] == [e.seq for e in mine]


def test_a_watch_filtered_by_kind(cmx: InProcCM) -> None:
    root = cmx.client()
    ids = two_hosts_busy(root)
    last = cmx.cluster.events.last_seq
    nets, _ = collect(root, last, kinds=[NETWORK])
    assert [e.type for e in nets] == [pb.EVENT_TYPE_NETWORK_CREATED]
    hosts, _ = collect(root, last, kinds=[HOST])
    assert hosts and {e.WhichOneof("subject") for e in hosts} == {"host"}
    assert {e.host.id for e in hosts} == {ids["a"], ids["b"]}
    b_instances, _ = collect(root, last, kinds=[INSTANCE], host="b")
    assert b_instances and {e.instance.id for e in b_instances} == {ids["y"]}


@pytest.mark.parametrize("request_", [
    cmpb.WatchEventsRequest(kinds=[cmpb.RESOURCE_KIND_UNSPECIFIED]),
    cmpb.WatchEventsRequest(kinds=[99]),  # type: ignore[list-item]
    cmpb.WatchEventsRequest(host=cmpb.HostRef()),
    cmpb.WatchEventsRequest(host=cmpb.HostRef(name="")),
], ids=["unspecified kind", "unknown kind", "empty host ref", "empty host name"])
def test_a_malformed_filter_is_invalid_argument(cmx: InProcCM,
                                                request_: cmpb.WatchEventsRequest) -> None:
    root = cmx.client()
    stream = root.cm.WatchEvents(request_, metadata=user_metadata("root"), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_a_watch_for_an_unknown_host_id_sees_no_host_events(cmx: InProcCM) -> None:
    root = cmx.client()
    two_hosts_busy(root)
    events, _ = collect(root, cmx.cluster.events.last_seq, host=987654)
    assert {e.WhichOneof("subject") for e in events} <= {"network", "user"}


class Mirror:
    """An informer handler keeping instances by id, as a follower would."""

    def __init__(self) -> None:
        self.instances: dict[int, pb.Instance] = {}
        self.reasons: list[str] = []
        self.seq = 0

    def on_list(self, listing: Listing, reason: str) -> None:
        self.instances = {i.id: i for i in listing.instances}
        self.reasons.append(reason)
        self.seq = listing.seq

    def on_events(self, events: list[pb.Event]) -> None:
        for e in events:
            self.seq = e.seq
            if e.WhichOneof("subject") != "instance":
                continue
            if e.type == pb.EVENT_TYPE_INSTANCE_DELETED:
                self.instances.pop(e.instance.id, None)
            else:
                self.instances[e.instance.id] = e.instance


def test_the_informer_relists_when_history_was_pruned_while_it_was_away(
        cmx: InProcCM) -> None:
    root = cmx.client()
    first = root.create_instances(vm("early", 1, 256), count=3)
    mirror = Mirror()
    informer = Informer(cmx.client(), mirror, kinds=[INSTANCE])
    informer.start()
    wait_for(lambda: informer.seq == cmx.cluster.events.last_seq or None, what="caught up")
    informer.stop()
    assert not informer.is_alive()
    assert set(mirror.instances) == {i.id for i in first}

    # Away: one deleted, more created, and the history pruned past the informer's seq.
    root.instance_action("Delete", first[0].id)
    later = root.create_instances(vm("late", 1, 256), count=2)
    c = cmx.cluster
    with c.lock:
        c.cfg.event_retention = 1
        c._prune()
    assert c.events.first_seq > informer.seq + 1

    again = Informer(cmx.client(), mirror, kinds=[INSTANCE], since=informer.seq)
    again.start()
    try:
        wait_for(lambda: len(mirror.reasons) == 2 or None, what="a relist")
        assert "no longer retained" in mirror.reasons[1]
        want = {i.id for i in first[1:]} | {i.id for i in later}
        wait_for(lambda: set(mirror.instances) == want or None, what="the right state")
        # And it follows on from the listing.
        extra = root.create_instances(vm("after", 1, 256))[0]
        wait_for(lambda: extra.id in mirror.instances or None, what="events after the relist")
        assert again.relists == 1
    finally:
        again.stop()


def test_stop_cancels_a_blocked_watch_within_a_second(cmx: InProcCM) -> None:
    calls: list[str] = []

    class Quiet:
        def on_list(self, listing: Listing, reason: str) -> None:
            calls.append("list")

        def on_events(self, events: list[pb.Event]) -> None:
            calls.append("events")

    informer = Informer(cmx.client(), Quiet(), kinds=[NETWORK])
    informer.start()
    wait_for(lambda: calls == ["list"] and informer._stream is not None or None,
             what="the watch open")
    time.sleep(0.3)  # blocked: nothing happens on an idle CM
    watch_threads = {t for t in threading.enumerate() if t.name == "informer"}
    assert watch_threads
    start = time.monotonic()
    informer.stop()
    assert time.monotonic() - start < 1.0
    assert not informer.is_alive()
    assert cmx.cluster.events.watchers == 0 or wait_for(
        lambda: cmx.cluster.events.watchers == 0 or None, what="the CM's side ended")
