"""Evacuating a host (`EvacuateHost`): drain it, then live-migrate its running
instances off, `parallel` at a time, each to the host with the most free memory
that passes every check a user's migration passes.  The answer lists the plan
at once; a background thread works through it.  An instance that cannot move
keeps running where it is, with the reason in its status; one whose migration
fails is back on the host with the failure as its reason.  None is ever lost."""

from __future__ import annotations

import collections
import logging
import threading
import time

from tashi.cm.cluster import Cluster
from tashi.cm.instances import check_migration_target, migrating_to
from tashi.cm.txn import Txn, copy_of, move
from tashi.runtime.errors import ServiceError, invalid
from tashi.runtime.fit import MIGRATING
from tashi.runtime.names import instance_state_name
from tashi.v1 import cluster_manager_pb2 as cmpb
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

MAX_PARALLEL = 64
POLL_SECONDS = 0.2
ACTOR = "tashi-cm"


def pick_target(c: Cluster, inst: pb.Instance) -> tuple[pb.Host | None, str]:
    """The host `inst` would move to (most free memory among those that pass the
    migration checks), or None and why no host would take it."""
    best: pb.Host | None = None
    reasons: list[str] = []
    for host in c.hosts.values():
        if host.id == inst.status.host_id:
            continue
        try:
            check_migration_target(c, inst, host)
        except ServiceError as exc:
            reasons.append(exc.message)
            continue
        ready = {s.network_id for s in host.networks if s.ready}
        if host.networks and any(n.network_id not in ready for n in inst.spec.nics):
            reasons.append(f"host {host.name} lacks one of its networks")
            continue
        if best is None or c.free(host)[1] > c.free(best)[1]:
            best = host
    if best is not None:
        return best, ""
    return None, ("no other host can take it: " + "; ".join(reasons[:3])) if reasons \
        else "no other host can take it: there is none"


def _plan(c: Cluster, host: pb.Host) -> tuple[list[cmpb.Evacuation], list[int]]:
    rows, movable = [], []
    for inst in sorted(c.instances.values(), key=lambda i: i.id):
        st = inst.status
        if st.host_id != host.id and st.suspend_host_id != host.id:
            continue
        row = cmpb.Evacuation(instance_id=inst.id, instance_name=inst.name)
        if st.state == pb.INSTANCE_STATE_RUNNING and st.host_id == host.id:
            target, why = pick_target(c, inst)
            if target is not None:
                row.target_host_id, row.target_host_name = target.id, target.name
            else:
                row.reason = why
            movable.append(inst.id)
        elif st.state in MIGRATING:
            row.reason = "already migrating"
        elif st.state == pb.INSTANCE_STATE_SUSPENDED:
            row.reason = (f"suspended: its saved state is on {host.name}; resuming brings it "
                          f"back there, from where it can move")
        else:
            row.reason = (f"{instance_state_name(st.state)}: only running instances move "
                          "live")
        rows.append(row)
    return rows, movable


class Evacuations:
    """The evacuations under way, one thread per host."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self._lock = threading.Lock()
        self._running: dict[int, threading.Thread] = {}
        self.stopping = threading.Event()

    def request(self, actor: str, req: cmpb.EvacuateHostRequest) -> cmpb.EvacuateHostResponse:
        c = self.c
        parallel = req.parallel or c.cfg.evacuate_parallel
        if not 1 <= parallel <= MAX_PARALLEL:
            raise invalid(f"parallel must be between 1 and {MAX_PARALLEL}, got {req.parallel}")
        movable: list[int] = []

        def body(txn: Txn) -> cmpb.EvacuateHostResponse:
            c.require_admin(actor, "evacuate hosts")
            host = c.find_host(req.host)
            if host.state == pb.HOST_STATE_NORMAL:
                drained = copy_of(host)
                drained.state = pb.HOST_STATE_DRAINED
                txn.put(drained, pb.EVENT_TYPE_HOST_UPDATED, f"drained by {actor} to evacuate")
                host = drained
            rows, ids = _plan(c, host)
            movable.extend(ids)
            return cmpb.EvacuateHostResponse(host=c.host_view(host), evacuations=rows)

        resp = c.mutate(actor, req.request_id, "EvacuateHost", cmpb.EvacuateHostResponse, body)
        if movable:
            self._start(resp.host.id, movable, parallel)
        return resp

    def _start(self, host_id: int, ids: list[int], parallel: int) -> None:
        with self._lock:
            if host_id in self._running and self._running[host_id].is_alive():
                return  # a retried request: the first one's thread does the work
            thread = threading.Thread(target=self._run, args=(host_id, ids, parallel),
                                      name=f"evacuate-{host_id}", daemon=True)
            self._running[host_id] = thread
        thread.start()

    def _in_flight(self, host_id: int) -> int:
        with self.c.lock:
            return sum(1 for i in self.c.instances.values()
                       if i.status.state in MIGRATING
                       and i.status.migration_source_host_id == host_id)

    def _run(self, host_id: int, ids: list[int], parallel: int) -> None:
        queue = collections.deque(ids)
        moved_on = 0
        while not self.stopping.is_set():
            busy = self._in_flight(host_id)
            while queue and busy < parallel:
                try:
                    if self._begin(host_id, queue.popleft()):
                        busy += 1
                        moved_on += 1
                except ServiceError as exc:
                    log.warning("evacuation of host %d: %s", host_id, exc.message)
            if not queue and busy == 0:
                break
            time.sleep(POLL_SECONDS)
        log.info("evacuation of host %d: %d migrations started, done", host_id, moved_on)

    def _begin(self, host_id: int, iid: int) -> bool:
        """Start one instance's migration, or note on it why it cannot move."""
        c = self.c
        started = False

        def body(txn: Txn) -> None:
            nonlocal started
            inst = c.instances.get(iid)
            if inst is None or inst.status.host_id != host_id \
                    or inst.status.state != pb.INSTANCE_STATE_RUNNING:
                return  # it moved, stopped or went meanwhile
            host = c.hosts[host_id]
            target, why = pick_target(c, inst)
            if target is None:
                reason = f"evacuation of {host.name}: {why}"
                move(txn, inst, pb.INSTANCE_STATE_RUNNING, reason, reason)
                return
            move(txn, inst, pb.INSTANCE_STATE_MIGRATE_PREP,
                 f"evacuating {host.name}: migrating to {target.name}",
                 edit=lambda st: migrating_to(st, host_id, target.id))
            txn.after.append(lambda: c.dispatch("migrate", iid))
            started = True

        c.write(ACTOR, body)
        return started

    def stop(self) -> None:
        self.stopping.set()
