"""Helpers for the accounting tests (no tests here): scripted event streams,
ledger dumps, and node managers played by the test; the accounting and CM
processes and `wait_for` are in tests/harness.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from tashi.runtime import fit
from tashi.runtime.client import ClusterClient
from tashi.runtime.version import VERSION
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import resources_pb2 as pb

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
S = pb


def ts(t: float) -> Timestamp:
    ns = int(round((T0 + t) * 1e9))
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def sized(name: str, cores: int, memory_mib: int) -> pb.Instance:
    """An instance as a user asks for it (the CM writes the status)."""
    return pb.Instance(name=name, spec=pb.InstanceSpec(cores=cores, memory_mib=memory_mib))


@dataclass
class Script:
    """Builds an event stream the way the cluster manager emits it: each event
    carries the whole resource after the change, seq increasing by one."""

    events: list[pb.Event] = field(default_factory=list)
    instances: dict[int, pb.Instance] = field(default_factory=dict)
    hosts: dict[int, pb.Host] = field(default_factory=dict)

    def _emit(self, t: float, etype: int, **subject: Any) -> pb.Event:
        ev = pb.Event(seq=len(self.events) + 1, time=ts(t), type=etype,  # type: ignore[arg-type]
                      actor="test", **subject)
        self.events.append(ev)
        return ev

    def host(self, t: float, host_id: int, name: str, up: bool = True) -> pb.Event:
        etype = S.EVENT_TYPE_HOST_UPDATED if host_id in self.hosts else S.EVENT_TYPE_HOST_CREATED
        host = pb.Host(id=host_id, name=name, up=up, cores=16, memory_mib=65536)
        self.hosts[host_id] = host
        return self._emit(t, etype, host=host)

    def create(self, t: float, iid: int, owner: str, cores: int, memory_mib: int,
               name: str | None = None) -> pb.Event:
        inst = pb.Instance(id=iid, owner=owner, name=name or f"vm{iid}",
                           spec=pb.InstanceSpec(cores=cores, memory_mib=memory_mib),
                           status=pb.InstanceStatus(state=S.INSTANCE_STATE_PENDING))
        self.instances[iid] = inst
        return self._emit(t, S.EVENT_TYPE_INSTANCE_CREATED, instance=inst)

    def change(self, t: float, iid: int, state: int, host_id: int | None = None,
               reason: str | None = None, **spec: Any) -> pb.Event:
        """A new status (state, host, reason); keywords change the spec (cores=...),
        which the CM never does, so the ledger must cope with it anyway."""
        inst = pb.Instance()
        inst.CopyFrom(self.instances[iid])
        status = inst.status
        status.state = state  # type: ignore[assignment]
        if host_id is not None:
            status.host_id = host_id
            status.host_name = self.hosts[host_id].name if host_id else ""
        if reason is not None:
            status.reason = reason
        status.ClearField("charged_host_ids")
        status.charged_host_ids.extend(fit.charged_hosts(state, status.host_id))
        for key, value in spec.items():
            setattr(inst.spec, key, value)
        self.instances[iid] = inst
        return self._emit(t, S.EVENT_TYPE_INSTANCE_UPDATED, instance=inst)

    def delete(self, t: float, iid: int) -> pb.Event:
        inst = self.instances.pop(iid)
        return self._emit(t, S.EVENT_TYPE_INSTANCE_DELETED, instance=inst)


def lifecycle_script() -> Script:
    """The scripted lifecycles whose usage the tests compute by hand (times in s from T0).

    A (alice, 2 cores, 1024 MiB): runs 20-125 on h1 (Pausing at 120 still runs),
      paused 125-190, runs 190-260 on h1, migrates, runs 260-405 on h2.
    B (bob, 4 cores, 2048 MiB): runs 50-300 on h2; h2 is lost at 300 (Orphaned) and
      its node manager reports B running again at 330, so B ran all along until it
      is suspended at 360; resumed, it runs on h1 from 520 on.
    C (alice, 1 core): start fails (Held), destroyed: no usage.
    D (alice, 1 core, 256 MiB): runs 100-201 on h1, paused 201-302 (destroyed while paused).
    E (carol, 2 cores, 512 MiB): runs 150-300 on h2, orphaned with it and never
      reported again: destroyed at 340-345, billed until the host was lost.
    """
    s = Script()
    s.host(0, 1, "h1")
    s.host(0, 2, "h2")
    s.create(0, 1, "alice", 2, 1024, "a")
    s.change(10, 1, S.INSTANCE_STATE_ACTIVATING, host_id=1)
    s.change(20, 1, S.INSTANCE_STATE_RUNNING)
    s.create(30, 2, "bob", 4, 2048, "b")
    s.change(40, 2, S.INSTANCE_STATE_ACTIVATING, host_id=2)
    s.change(50, 2, S.INSTANCE_STATE_RUNNING)
    s.create(60, 3, "alice", 1, 512, "c")
    s.change(70, 3, S.INSTANCE_STATE_ACTIVATING, host_id=1)
    s.change(75, 3, S.INSTANCE_STATE_HELD, host_id=0, reason="start failed")
    s.delete(80, 3)
    s.create(90, 4, "alice", 1, 256, "d")
    s.change(95, 4, S.INSTANCE_STATE_ACTIVATING, host_id=1)
    s.change(100, 4, S.INSTANCE_STATE_RUNNING)
    s.change(120, 1, S.INSTANCE_STATE_PAUSING)
    s.change(125, 1, S.INSTANCE_STATE_PAUSED)
    s.create(140, 5, "carol", 2, 512, "e")
    s.change(145, 5, S.INSTANCE_STATE_ACTIVATING, host_id=2)
    s.change(150, 5, S.INSTANCE_STATE_RUNNING)
    s.change(185, 1, S.INSTANCE_STATE_UNPAUSING)
    s.change(190, 1, S.INSTANCE_STATE_RUNNING)
    s.change(200, 4, S.INSTANCE_STATE_PAUSING)
    s.change(201, 4, S.INSTANCE_STATE_PAUSED)
    s.change(250, 1, S.INSTANCE_STATE_MIGRATE_PREP)
    s.change(255, 1, S.INSTANCE_STATE_MIGRATE_TRANS)
    s.change(260, 1, S.INSTANCE_STATE_RUNNING, host_id=2)
    s.change(290, 4, S.INSTANCE_STATE_DESTROYING)
    s.change(295, 4, S.INSTANCE_STATE_DESTROYING, reason="retrying")
    s.host(300, 2, "h2", up=False)
    s.change(300, 2, S.INSTANCE_STATE_ORPHANED, reason="host h2 lost")
    s.change(300, 5, S.INSTANCE_STATE_ORPHANED, reason="host h2 lost")
    s.delete(302, 4)
    s.host(330, 2, "h2", up=True)
    s.change(330, 2, S.INSTANCE_STATE_RUNNING, reason="")
    s.change(340, 5, S.INSTANCE_STATE_DESTROYING)
    s.delete(345, 5)
    s.change(350, 2, S.INSTANCE_STATE_SUSPENDING)
    s.change(360, 2, S.INSTANCE_STATE_SUSPENDED, host_id=0)
    s.change(400, 1, S.INSTANCE_STATE_DESTROYING)
    s.delete(405, 1)
    s.change(500, 2, S.INSTANCE_STATE_PENDING)
    s.change(510, 2, S.INSTANCE_STATE_ACTIVATING, host_id=1)
    s.change(520, 2, S.INSTANCE_STATE_RUNNING)
    return s


def dump_ledger(path: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of a ledger, rows in key order, for comparing two ledgers."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            "ledger": conn.execute("SELECT * FROM ledger ORDER BY id").fetchall(),
            "intervals": conn.execute("SELECT * FROM intervals ORDER BY id").fetchall(),
            "instances": conn.execute("SELECT * FROM instances ORDER BY instance_id").fetchall(),
            "hosts": conn.execute("SELECT * FROM hosts ORDER BY host_id").fetchall(),
            "meta": conn.execute("SELECT * FROM meta ORDER BY key").fetchall(),
        }
    finally:
        conn.close()


def committed_seq(path: str | Path) -> int:
    """The last event sequence a ledger committed (0 before its first commit)."""
    if not Path(path).exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0  # schema not created yet
    finally:
        conn.close()


def batches(events: list[pb.Event], size: int) -> Iterator[list[pb.Event]]:
    for i in range(0, len(events), size):
        yield events[i:i + size]


class SyntheticHost:
    """A host whose node manager is this object: it registers with the CM and
    reports VM states (RUNNING, PAUSED, EXITED) exactly as `tashi-nm` would."""

    def __init__(self, client: ClusterClient, name: str, add: bool = True) -> None:
        self.client = client
        self.name = name
        self.report_seq = 0
        self.vms: dict[int, int] = {}
        if add:
            client.create_host(name)
        self.register()

    def register(self) -> None:
        reports = [nr.InstanceReport(instance_id=iid, vm_id=f"vm-{iid}", state=state)  # type: ignore[arg-type]
                   for iid, state in self.vms.items()]
        self.client.call(self.client.registry.RegisterHost, nr.RegisterHostRequest(
            name=self.name, cores=1024, memory_mib=1 << 22, version=VERSION,
            nm_address="127.0.0.1:1", instances=reports))

    def report(self, changes: list[tuple[int, int]]) -> None:
        reports = []
        for iid, state in changes:
            self.report_seq += 1
            reports.append(nr.InstanceReport(instance_id=iid, vm_id=f"vm-{iid}",
                                             state=state,  # type: ignore[arg-type]
                                             report_seq=self.report_seq))
            if state == S.INSTANCE_STATE_EXITED:
                self.vms.pop(iid, None)
            else:
                self.vms[iid] = state
        self.client.call(self.client.registry.ReportInstances,
                         nr.ReportInstancesRequest(name=self.name, reports=reports))



def cm_history(client: ClusterClient) -> list[pb.Event]:
    """Every event the CM has retained, up to now."""
    top = client.last_seq()
    out: list[pb.Event] = []
    if top == 0:
        return out
    for batch in client.watch_events(0):
        out.extend(batch)
        if out[-1].seq >= top:
            break
    return out
