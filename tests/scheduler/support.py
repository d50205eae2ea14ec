"""Helpers for the scheduler's integration tests (no tests here); the scheduler
process, the in-thread agent and the waits are in tests/harness.py.

Synthetic hosts are added and registered through the CM's own node manager
API with no `nm_address`, so the CM never calls a node manager for them and
placed instances stay Activating, holding their capacity.
"""

from __future__ import annotations

from collections import Counter

from tashi.runtime import fit
from tashi.runtime.auth import user_metadata
from tashi.runtime.client import ClusterClient
from tashi.v1 import cluster_manager_pb2 as cm
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import resources_pb2 as pb


def add_hosts(client: ClusterClient, sizes: list[tuple[int, int]], prefix: str = "h",
              start: int = 0) -> list[pb.Host]:
    """Add and register hosts of (cores, memory MiB), named prefix+index."""
    hosts = []
    for i, (cores, memory) in enumerate(sizes, start=start):
        name = f"{prefix}{i}"
        client.create_host(name)
        resp = client.call(client.registry.RegisterHost, nr.RegisterHostRequest(
            name=name, cores=cores, memory_mib=memory, version="0.1.0"))
        hosts.append(resp.host)
    return hosts


def spec(name: str, cores: int = 1, memory: int = 1024, **kw: object) -> pb.Instance:
    """An instance as a user asks for it: a name and a spec (spec fields as keywords)."""
    return pb.Instance(name=name, spec=pb.InstanceSpec(
        cores=cores, memory_mib=memory, **kw))  # type: ignore[arg-type]


def history(client: ClusterClient) -> list[pb.Event]:
    """Every event from the start up to now."""
    last = client.last_seq()
    out: list[pb.Event] = []
    if last == 0:
        return out
    stream = client.cm.WatchEvents(cm.WatchEventsRequest(since=0, max_batch=5000),
                                   metadata=user_metadata(client.user), timeout=60)
    try:
        for resp in stream:
            out.extend(resp.events)
            if out and out[-1].seq >= last:
                break
    finally:
        stream.cancel()
    assert [e.seq for e in out] == list(range(1, len(out) + 1)), "events missing from history"
    return out


def overcommits(events: list[pb.Event]) -> list[str]:
    """Replay the history and report every moment a host held more than its capacity."""
    capacity: dict[int, tuple[int, int]] = {}
    used: dict[int, list[int]] = {}
    charged: dict[int, tuple[tuple[int, ...], int, int]] = {}
    problems: list[str] = []
    for ev in events:
        kind = ev.WhichOneof("subject")
        if kind == "host" and ev.type != pb.EVENT_TYPE_HOST_DELETED:
            capacity[ev.host.id] = (ev.host.cores, ev.host.memory_mib)
        elif kind == "instance":
            inst = ev.instance
            old = charged.pop(inst.id, None)
            if old is not None:
                for h in old[0]:
                    used[h][0] -= old[1]
                    used[h][1] -= old[2]
            if ev.type == pb.EVENT_TYPE_INSTANCE_DELETED:
                continue
            # The one fit rule, applied here to what the events say, not to the
            # CM's own charged_host_ids: this replay checks the CM.
            st = inst.status
            now = (fit.charged_hosts(st.state, st.host_id, st.migration_target_host_id),
                   inst.spec.cores, inst.spec.memory_mib)
            charged[inst.id] = now
            for h in now[0]:
                u = used.setdefault(h, [0, 0])
                u[0] += now[1]
                u[1] += now[2]
                cores, memory = capacity.get(h, (0, 0))
                if u[0] > cores or u[1] > memory:
                    problems.append(f"seq {ev.seq}: host {h} holds {u[0]}/{cores} cores, "
                                    f"{u[1]}/{memory} MiB")
    return problems


def activations(events: list[pb.Event]) -> Counter[int]:
    """How many times each instance entered Activating."""
    seen: Counter[int] = Counter()
    state: dict[int, int] = {}
    for ev in events:
        if ev.WhichOneof("subject") != "instance":
            continue
        inst = ev.instance
        if inst.status.state == pb.INSTANCE_STATE_ACTIVATING and \
                state.get(inst.id) != pb.INSTANCE_STATE_ACTIVATING:
            seen[inst.id] += 1
        state[inst.id] = inst.status.state
    return seen


def report(client: ClusterClient, host: str, instance_id: int, state: int,
           message: str = "") -> None:
    """Speak for a synthetic host's node manager: the VM exited, failed to start ..."""
    client.call(client.registry.ReportInstances, nr.ReportInstancesRequest(
        name=host, reports=[nr.InstanceReport(instance_id=instance_id, state=state,
                                              message=message)]))
