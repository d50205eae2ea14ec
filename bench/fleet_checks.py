"""What the fleet bench and the fleet test check, on a real CM and a `Fleet`.

- `Tracker`: follows the CM's event stream, noting when each instance entered
  each state and when each host went down or came up (times on this process's
  `perf_counter`), and keeps every event for the overcommit replay.
- `accounted`: every instance Running on exactly one host, the one the CM
  says, whose node manager's own libvirt connection lists it; nothing in any
  libvirt the CM does not know.
- `failure_drill`: freeze a group of hosts at once, time until the CM marks
  them all down and their VMs Orphaned, thaw them, time until every VM is
  Running again on its host, count the lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from bench.fleet import Fleet, Group
from tashi.runtime.client import ClusterClient
from tashi.runtime.names import instance_state_name
from tashi.runtime.rpc import TashiError
from tashi.v1 import resources_pb2 as pb

RUNNING = pb.INSTANCE_STATE_RUNNING
ORPHANED = pb.INSTANCE_STATE_ORPHANED
ACTIVATING = pb.INSTANCE_STATE_ACTIVATING
MAX_RESUMED = 5  # broken watches resumed at most, per run



class Tracker(threading.Thread):
    def __init__(self, client: ClusterClient, since: int) -> None:
        super().__init__(name="tracker", daemon=True)
        self.events: list[pb.Event] = []
        self.state: dict[int, int] = {}  # instance id -> state (-1: deleted)
        self.state_at: dict[int, float] = {}
        self.first: dict[int, dict[int, float]] = {ACTIVATING: {}, RUNNING: {}}
        self.host_up: dict[int, bool] = {}
        self.host_at: dict[int, float] = {}
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        # Watches that broke UNAVAILABLE and were resumed where they stopped, as a
        # follower would (runtime/informer.py): on this 2-core machine loaded with a
        # thousand hosts, a keepalive ping may go unanswered past its 5 s.
        self.resumed: list[str] = []
        self._client = client
        self._cancelled = False
        self._stream = client.watch_events(since, max_batch=5000)

    def run(self) -> None:
        try:
            while True:
                try:
                    for batch in self._stream:
                        now = time.perf_counter()
                        with self.cond:
                            for ev in batch:
                                self._note(ev, now)
                            self.cond.notify_all()
                    return
                except TashiError as exc:
                    if exc.code != grpc.StatusCode.UNAVAILABLE or self._cancelled or \
                            len(self.resumed) >= MAX_RESUMED:
                        raise
                    self.resumed.append(exc.message)
                    self._stream = self._client.watch_events(self._stream.seq, max_batch=5000)
        except BaseException as exc:  # noqa: BLE001 - reported to whoever waits
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def _note(self, ev: pb.Event, now: float) -> None:
        self.events.append(ev)
        kind = ev.WhichOneof("subject")
        if kind == "host":
            if self.host_up.get(ev.host.id) != ev.host.up:
                self.host_up[ev.host.id] = ev.host.up
                self.host_at[ev.host.id] = now
        elif kind == "instance":
            iid = ev.instance.id
            st = -1 if ev.type == pb.EVENT_TYPE_INSTANCE_DELETED else ev.instance.status.state
            if self.state.get(iid) != st:
                self.state[iid] = st
                self.state_at[iid] = now
                if st in self.first:
                    self.first[st].setdefault(iid, now)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate` (called under the lock) holds; False after `timeout`."""
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate() or self.error is not None, timeout)
        if self.error is not None:
            raise RuntimeError(f"the event stream failed: {self.error}")
        return bool(ok)

    def count(self, ids: list[int] | set[int], state: int) -> int:
        with self.cond:
            return sum(1 for i in ids if self.state.get(i) == state)

    def cancel(self) -> None:
        self._cancelled = True
        self._stream.cancel()


def accounted(client: ClusterClient, fleet: Fleet) -> list[str]:
    """What is wrong with the claim 'every instance Running on exactly one host,
    the CM's, whose libvirt lists it' (empty when nothing)."""
    instances = client.list_instances()
    names = {h.id: h.name for h in client.list_hosts()}
    where: dict[int, list[str]] = {}
    for host, ids in fleet.vms().items():
        for iid in ids:
            where.setdefault(iid, []).append(host)
    problems = []
    for inst in instances:
        on = where.get(inst.id, [])
        if inst.status.state != RUNNING:
            problems.append(f"instance {inst.id} is {instance_state_name(inst.status.state)}")
        elif on != [names.get(inst.status.host_id)]:
            problems.append(f"instance {inst.id} is Running on "
                            f"{names.get(inst.status.host_id)} for the CM, in libvirt on {on}")
    known = {i.id for i in instances}
    problems += [f"libvirt on {on} runs instance {iid}, unknown to the CM"
                 for iid, on in where.items() if iid not in known]
    return problems


@dataclass
class Drill:
    hosts: int
    vms: int
    down_s: float  # frozen -> the last of them marked down (inf: not within the wait)
    orphaned_s: float  # frozen -> the last of their VMs Orphaned
    back_s: float  # thawed -> the last VM Running again
    lost: int  # VMs not Running again on their host

    def __str__(self) -> str:
        return (f"{self.hosts} hosts with {self.vms} VMs frozen at once: all marked down "
                f"after {self.down_s:.2f}s, all VMs Orphaned after {self.orphaned_s:.2f}s; "
                f"thawed: all Running again after {self.back_s:.2f}s, {self.lost} lost")


def failure_drill(client: ClusterClient, fleet: Fleet, group: Group, tracker: Tracker,
                  timeout: float = 60.0) -> Drill:
    """Freeze `group`'s worker (SIGSTOP: its hosts go silent with their connections
    open), wait for the CM to notice, thaw it and wait for every VM to come back."""
    hosts = {h.id: h.name for h in client.list_hosts() if h.name in group.names}
    victims = {i.id: i.status.host_id for i in client.list_instances()
               if i.status.host_id in hosts and i.status.state == RUNNING}
    inf = float("inf")
    t0 = time.perf_counter()
    fleet.freeze(group)
    try:
        down = tracker.wait(lambda: all(tracker.host_up.get(h) is False for h in hosts),
                            timeout)
        down_s = max(tracker.host_at[h] for h in hosts) - t0 if down else inf
        orphaned = tracker.wait(lambda: all(tracker.state.get(i) == ORPHANED for i in victims),
                                timeout)
        orphaned_s = (max((tracker.state_at[i] for i in victims), default=t0) - t0
                      if orphaned else inf)
    finally:
        t1 = time.perf_counter()
        fleet.thaw(group)
    back = tracker.wait(lambda: all(tracker.state.get(i) == RUNNING for i in victims), timeout)
    back_s = max((tracker.state_at[i] for i in victims), default=t1) - t1 if back else inf
    now = {i.id: i for i in client.list_instances()}
    lost = sum(1 for iid, hid in victims.items()
               if iid not in now or now[iid].status.state != RUNNING
               or now[iid].status.host_id != hid)
    return Drill(len(hosts), len(victims), down_s, orphaned_s, back_s, lost)
