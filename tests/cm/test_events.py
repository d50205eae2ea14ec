"""WatchEvents: replay then tail, resume from a sequence, OUT_OF_RANGE, several watchers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from tashi.runtime.client import TashiError
from tashi.v1 import resources_pb2 as pb
from tests.harness import InProcCM, inproc_cm, vm


def collect(client, since: int, want: int, timeout: float = 10.0) -> list[pb.Event]:  # type: ignore[no-untyped-def]
    got: list[pb.Event] = []
    stream = client.watch_events(since)
    deadline = time.monotonic() + timeout
    for batch in stream:
        got.extend(batch)
        if len(got) >= want or time.monotonic() > deadline:
            break
    stream.close()
    return got


def test_replay_then_tail_in_order(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    start = icm.cluster.events.last_seq
    alice.create_instances(vm("e", 1, 64), count=3)
    received: list[pb.Event] = []
    done = threading.Event()

    def watch() -> None:
        received.extend(collect(root, start, 5))
        done.set()

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    alice.instance_action("Delete", "e-0")
    alice.instance_action("Delete", "e-1")
    assert done.wait(10)
    t.join()
    seqs = [e.seq for e in received]
    assert seqs == list(range(start + 1, start + 6)), "every event once, in order, no gap"
    assert [e.type for e in received] == [pb.EVENT_TYPE_INSTANCE_CREATED] * 3 + [
        pb.EVENT_TYPE_INSTANCE_DELETED] * 2
    assert received[0].instance.name == "e-0" and received[0].actor == "alice"
    assert received[3].instance.status.state == pb.INSTANCE_STATE_EXITED


def test_resume_from_any_sequence(icm: InProcCM) -> None:
    root = icm.client()
    icm.client("alice").create_instances(vm("r", 1, 64), count=10)
    last = icm.cluster.events.last_seq
    tail = collect(root, last - 4, 4)
    assert [e.seq for e in tail] == [last - 3, last - 2, last - 1, last]


def test_out_of_range_after_retention(tmp_path: Path) -> None:
    with inproc_cm(tmp_path, event_retention=50) as cm:
        root = cm.client()
        for i in range(12):
            root.create_instances(vm(f"x{i}", 1, 64), count=100)
        # Pruning runs every 1,000 commits; force one now.
        cm.cluster._prune()
        assert cm.cluster.events.first_seq > 2
        with pytest.raises(TashiError) as err:
            collect(root, 1, 1)
        assert err.value.code == grpc.StatusCode.OUT_OF_RANGE
        assert "list again" in err.value.message
        with pytest.raises(TashiError) as err:
            collect(root, cm.cluster.events.last_seq + 10, 1)
        assert err.value.code == grpc.StatusCode.OUT_OF_RANGE
        # The relist answer says where to watch from.
        from tashi.v1 import cluster_manager_pb2 as cmpb
        listed = root.call(root.cm.ListInstances, cmpb.ListInstancesRequest(page_size=5000))
        root.instance_action("Delete", "x0-0")
        [event] = collect(root, listed.seq, 1)
        assert event.seq == listed.seq + 1 and event.instance.name == "x0-0"


def test_slow_watcher_does_not_block_writers(icm: InProcCM) -> None:
    root, alice = icm.client(), icm.client("alice")
    stuck = root.watch_events(0, max_batch=1)
    next(stuck)  # a watcher that reads one batch and then never again
    fast_events: list[pb.Event] = []
    t0 = time.monotonic()
    for i in range(20):
        alice.create_instances(vm(f"s{i}", 1, 64), count=50)
    elapsed = time.monotonic() - t0
    fast_events = collect(root, 0, icm.cluster.events.last_seq)
    stuck.close()
    assert len(fast_events) == icm.cluster.events.last_seq
    assert elapsed < 10, f"writers took {elapsed:.1f}s with a stuck watcher"


def test_restart_keeps_history(tmp_path: Path) -> None:
    with inproc_cm(tmp_path) as cm:
        cm.client().create_instances(vm("k", 1, 64), count=5)
        last = cm.cluster.events.last_seq
    with inproc_cm(tmp_path) as cm:
        events = collect(cm.client(), 0, last)
        assert [e.seq for e in events[:last]] == list(range(1, last + 1))
        assert cm.cluster.events.last_seq >= last
