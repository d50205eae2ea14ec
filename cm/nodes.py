"""What node managers tell the cluster manager: registration, heartbeats,
state reports; and the liveness monitor that marks silent hosts down."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from tashi.cm import instances
from tashi.cm import validation as v
from tashi.cm.cadence import cadence, settle
from tashi.cm.cluster import Cluster
from tashi.cm.instances import remove
from tashi.cm.lifecycle import EXIT_IGNORED, ORPHANABLE, REPORT_TARGETS, stray_copy
from tashi.cm.txn import Txn, copy_of, move
from tashi.runtime.auth import NODE_PREFIX
from tashi.runtime.errors import ServiceError, aborted, denied, exhausted, invalid, not_found
from tashi.runtime.migration import uri_problem
from tashi.runtime.names import instance_state_name
from tashi.runtime.version import VERSION, compatible
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

# Instances whose absence from a node manager's full report is expected.
IN_FLIGHT = frozenset({pb.INSTANCE_STATE_ACTIVATING, pb.INSTANCE_STATE_RESUMING,
                       pb.INSTANCE_STATE_MIGRATE_PREP, pb.INSTANCE_STATE_MIGRATE_TRANS})


def _host_by_name(c: Cluster, name: str) -> pb.Host:
    hid = c.host_ids.get(name)
    if hid is None:
        raise not_found(f"host {name!r} was never added to the cluster; an admin adds it with "
                        f"`tashi addHost --name {name}`")
    return c.hosts[hid]


def speak_for(c: Cluster, actor: str, host_name: str, what: str) -> None:
    """A node manager speaks for its own host only (its certificate names it, as
    Kubernetes' NodeRestriction); an admin may speak for any (tools, tests)."""
    if actor.startswith(NODE_PREFIX):
        node = actor[len(NODE_PREFIX):]
        if node != host_name:
            log.warning("refused: node %r tried to %s for host %r", node, what, host_name)
            raise denied(f"node {node!r} may {what} for its own host only, not for "
                         f"{host_name!r}")
        return
    c.require_admin(actor, what)


def stale_list(c: Cluster, host_id: int, req: nr.RegisterHostRequest) -> bool:
    """A registration whose list was taken before something this CM already
    learned from the same node manager process: a start that ran after the list
    would be ended as missing from it.  (The node manager holds its starts while
    its registration is on the way, but not after giving up waiting for the
    answer: a registration can reach the lock after newer news.)"""
    if not (req.incarnation and req.snapshot_seq):
        return False
    incarnation, top = c.nm_seqs.get(host_id, (0, 0))
    if incarnation != req.incarnation:
        return False
    return req.snapshot_seq < max(top, c.applied_reports.get(host_id, 0))


def register(c: Cluster, actor: str, req: nr.RegisterHostRequest,
             fingerprint: str = "", wanted: Callable[[], bool] = lambda: True
             ) -> nr.RegisterHostResponse:
    """`wanted` False (the node manager gave up waiting: it registers again with a
    fresh list, and lets its held starts go on meanwhile) applies nothing."""
    def body(txn: Txn) -> nr.RegisterHostResponse:
        if not wanted():
            raise exhausted("the node manager stopped waiting for this registration")
        speak_for(c, actor, req.name, "register")
        host = _host_by_name(c, req.name)
        if stale_list(c, host.id, req):
            raise aborted(f"this registration's list of VMs (report_seq {req.snapshot_seq}) "
                          f"is older than what {host.name} has told the cluster manager "
                          "since; register again with a new list")
        held = c.host_certs.get(host.id)
        if fingerprint and host.up and held and held != fingerprint:
            log.warning("refused: a second registration of host %s, which is up, from another "
                        "certificate", host.name)
            raise denied(f"host {host.name} is up and registered with another certificate; "
                         "it may register again once it is down")
        for report in req.instances:
            check_report(report)
        new = copy_of(host)
        new.up = True
        new.decayed = False
        new.cores = req.cores
        new.memory_mib = req.memory_mib
        new.version = req.version
        new.nm_address = req.nm_address
        caps = req.capabilities
        if caps.migration_uri and uri_problem(caps.migration_uri):
            raise invalid(f"capabilities: {uri_problem(caps.migration_uri)}")
        new.capabilities.CopyFrom(pb.HostCapabilities(
            migration_uri=caps.migration_uri, live_migration=caps.live_migration,
            reason=caps.reason[:200]))
        del new.networks[:]
        new.networks.extend(req.networks)
        if not compatible(VERSION, req.version):
            new.state = pb.HOST_STATE_VERSION_MISMATCH
        elif host.state == pb.HOST_STATE_VERSION_MISMATCH:
            new.state = pb.HOST_STATE_NORMAL
        if new != host:
            txn.put(new, pb.EVENT_TYPE_HOST_UPDATED, f"node manager {req.version} registered")
        c.heartbeats[host.id] = time.monotonic()
        if fingerprint:
            txn.after.append(lambda: c.host_certs.__setitem__(host.id, fingerprint))
        reported = {r.instance_id for r in req.instances}
        for iid in sorted(c.charged.get(host.id, ())):  # its own, not every instance
            inst = c.instances[iid]
            if iid not in reported:
                if inst.status.state in IN_FLIGHT:
                    continue
                remove(txn, inst, f"the node manager on {host.name} no longer runs it")
        for report in req.instances:
            observe(c, txn, new, report)
        seen = max([req.snapshot_seq, *(r.report_seq for r in req.instances)])
        c.nm_seqs[host.id] = (req.incarnation, seen)
        txn.after.append(lambda: c.applied_reports.__setitem__(host.id, seen))
        pace = c.cadence
        port, token = c.beats.ticket(host.id, fresh=True) if c.beats else (0, b"")
        return nr.RegisterHostResponse(host=c.host_view(new),
                                       heartbeat_seconds=math.ceil(pace.interval),
                                       expire_host_seconds=math.ceil(pace.expire),
                                       heartbeat_interval_seconds=pace.interval,
                                       expire_after_seconds=pace.expire,
                                       beat_port=port, beat_token=token)

    return c.mutate(actor, req.request_id, "RegisterHost", nr.RegisterHostResponse, body)


def heartbeat(c: Cluster, actor: str, req: nr.HeartbeatRequest) -> nr.HeartbeatResponse:
    """Note the time, without the lock, so no reader or writer of the cluster can
    delay a beat into the host's expiry; only a change of network status writes."""
    speak_for(c, actor, req.name, "send heartbeats")
    hid = c.host_ids.get(req.name)
    host = c.hosts.get(hid) if hid is not None else None
    if host is None or not host.up:
        return nr.HeartbeatResponse(registered=False)
    c.heartbeats[host.id] = time.monotonic()
    if req.networks_changed:
        def body(txn: Txn) -> None:
            current = c.hosts.get(host.id)
            if current is None or list(req.networks) == list(current.networks):
                return
            new = copy_of(current)
            del new.networks[:]
            new.networks.extend(req.networks)
            txn.put(new, pb.EVENT_TYPE_HOST_UPDATED, "network status changed")
        c.write(actor, body)
    port, token = c.beats.ticket(host.id, fresh=False) if c.beats else (0, b"")
    return nr.HeartbeatResponse(registered=True,
                                heartbeat_interval_seconds=c.cadence.interval,
                                beat_port=port, beat_token=token)


def report(c: Cluster, actor: str, req: nr.ReportInstancesRequest,
           wanted: Callable[[], bool] = lambda: True) -> nr.ReportInstancesResponse:
    """Apply a node manager's reports; `wanted` False (the caller gave up while the
    report waited for the lock: it sends the same reports again) applies nothing."""
    def body(txn: Txn) -> nr.ReportInstancesResponse:
        if not wanted():
            raise exhausted("the node manager stopped waiting for this report")
        speak_for(c, actor, req.name, "report instances")
        host = _host_by_name(c, req.name)
        for rep in req.reports:
            check_report(rep)
        applied = c.applied_reports.get(host.id, 0)
        for rep in req.reports:
            if rep.report_seq and rep.report_seq <= applied:
                continue
            applied = max(applied, rep.report_seq)
            if not answered_since(c, host, rep):
                observe(c, txn, host, rep)
        c.learned(host.id, applied)
        txn.after.append(lambda: settled_reports(c, host.id, applied, req.reports))
        return nr.ReportInstancesResponse(applied_seq=applied)

    return c.mutate(actor, req.request_id, "ReportInstances", nr.ReportInstancesResponse, body)


def answered_since(c: Cluster, host: pb.Host, rep: nr.InstanceReport) -> bool:
    """Whether `host`'s node manager answered an action on the instance after it
    observed what `rep` says (a RUNNING still in flight when a pause's answer
    came: applied, it would undo the pause)."""
    host_id, seq = c.answer_seqs.get(rep.instance_id, (0, 0))
    if host_id == host.id and rep.report_seq and rep.report_seq < seq:
        log.info("host %s's report of instance %d (seq %d) is older than its answer "
                 "(seq %d); not applied", host.name, rep.instance_id, rep.report_seq, seq)
        return True
    return False


def settled_reports(c: Cluster, host_id: int, applied: int,
                    reports: Sequence[nr.InstanceReport]) -> None:
    """Once a report call is stored: the node manager's reports up to `applied`
    are done with, and so are its answers numbered up to it (whatever it reports
    of those instances later is numbered after them)."""
    c.applied_reports[host_id] = applied
    for rep in reports:
        known = c.answer_seqs.get(rep.instance_id)
        if known is not None and known[0] == host_id and known[1] <= applied:
            del c.answer_seqs[rep.instance_id]


# How far ahead of the CM's clock a report_seq may be: node managers number
# their reports with their clock's microseconds, so a day covers any skew,
# and a report from the far future cannot make every later one look old.
MAX_SEQ_AHEAD_US = 86_400 * 1_000_000
REPORTABLE = frozenset({pb.INSTANCE_STATE_RUNNING, pb.INSTANCE_STATE_PAUSED,
                        pb.INSTANCE_STATE_SUSPENDED, pb.INSTANCE_STATE_EXITED,
                        pb.INSTANCE_STATE_HELD, pb.INSTANCE_STATE_DESTROYING})


def check_report(rep: nr.InstanceReport) -> None:
    """What any report must be: an instance id, a state a node manager can see, a
    sequence number not from the far future.  A node's report about another
    host's instance is not refused, since an honest node makes one too (a start
    whose answer the CM never heard, so it placed the instance again elsewhere; a
    stale report from before a migration), and refusing it would refuse the whole
    call, which the node sends again and again: its reports and registrations
    would never go through.  `observe` applies nothing from such a report."""
    if rep.instance_id <= 0:
        raise invalid(f"instance_id must be positive, got {rep.instance_id}")
    if rep.state not in REPORTABLE:
        raise invalid(f"instance {rep.instance_id}: a node manager cannot report state "
                      f"{instance_state_name(rep.state)}")
    if rep.report_seq < 0 or rep.report_seq > time.time_ns() // 1000 + MAX_SEQ_AHEAD_US:
        raise invalid(f"report_seq {rep.report_seq} is more than a day ahead of the cluster "
                      "manager's clock")


def observe(c: Cluster, txn: Txn, host: pb.Host, rep: nr.InstanceReport) -> None:
    """Apply one thing a node manager saw (Tashi's reconciliation rules)."""
    inst = txn.instance(rep.instance_id)
    state = rep.state
    if inst is None:
        if state not in (pb.INSTANCE_STATE_RUNNING, pb.INSTANCE_STATE_PAUSED):
            return
        if c.issued(txn, "instance", rep.instance_id):
            # Deleted here while its start was still on the way to the host (the
            # destroy found nothing, then the start landed): never adopted back.
            log.warning("host %s runs a VM of instance %d, which was deleted; ending it",
                        host.name, rep.instance_id)
            hid, iid = host.id, rep.instance_id
            txn.after.append(lambda: c.end_stray(hid, iid))
        elif rep.spec.name:
            _adopt_unknown(c, txn, host, rep)
        return
    status = inst.status
    on_this_host = host.id in (status.host_id, status.migration_target_host_id)
    if state == pb.INSTANCE_STATE_EXITED:
        if on_this_host and status.state not in EXIT_IGNORED:
            remove(txn, inst, rep.message or f"exited on {host.name}")
        return
    if state == pb.INSTANCE_STATE_DESTROYING:
        return
    if not on_this_host:
        if state == pb.INSTANCE_STATE_RUNNING and not status.host_id and status.state in (
                pb.INSTANCE_STATE_PENDING, pb.INSTANCE_STATE_HELD):
            def found(new: pb.InstanceStatus) -> None:
                new.host_id, new.host_name = host.id, host.name
                new.vm_id = rep.vm_id
            move(txn, inst, pb.INSTANCE_STATE_RUNNING, f"found running on {host.name}",
                 edit=found)
        elif status.host_id:
            _elsewhere(c, txn, host, inst, state)
        return
    if status.state == pb.INSTANCE_STATE_DESTROYING:
        iid = inst.id
        txn.after.append(lambda: c.dispatch("destroy", iid))
        return
    inst = _learn_addresses(txn, inst, host, rep)
    if inst.status.state not in REPORT_TARGETS.get(state, frozenset()):
        return
    if inst.status.state == state and inst.status.vm_id == rep.vm_id:
        return

    def seen(new: pb.InstanceStatus) -> None:
        new.vm_id = rep.vm_id or new.vm_id
        if state == pb.INSTANCE_STATE_SUSPENDED:
            new.suspend_image = rep.suspend_file
            new.suspend_host_id = host.id

    msg = rep.message or f"{instance_state_name(state)} on {host.name}"
    move(txn, inst, state, msg, rep.message if state == pb.INSTANCE_STATE_HELD else "", seen)


def _elsewhere(c: Cluster, txn: Txn, host: pb.Host, inst: pb.Instance, state: int) -> None:
    """`host` reports a VM of `inst`, which is on another host: nothing of it is
    applied.  If `host` runs a copy while the instance settled elsewhere (a start
    answer the CM never heard, then placed again), the copy is ended there; not
    while the instance migrates or is Orphaned, when either copy may be the one."""
    log.warning("host %s reported instance %d as %s, which is on host %s; not applied",
                host.name, inst.id, instance_state_name(state), inst.status.host_name)
    if state in (pb.INSTANCE_STATE_RUNNING, pb.INSTANCE_STATE_PAUSED) and \
            stray_copy(inst.status, host.id):
        log.warning("host %s runs a second copy of instance %d; ending it", host.name, inst.id)
        hid, iid = host.id, inst.id
        txn.after.append(lambda: c.end_stray(hid, iid))


def _learn_addresses(txn: Txn, inst: pb.Instance, host: pb.Host,
                     rep: nr.InstanceReport) -> pb.Instance:
    """NIC addresses the node manager discovered (DHCP), matched by MAC."""
    seen = {n.mac.lower(): n.ip for n in rep.spec.status.nics if n.mac and n.ip}
    if not any(seen.get(n.mac.lower(), n.ip) != n.ip for n in inst.status.nics):
        return inst

    def learn(status: pb.InstanceStatus) -> None:
        for nic in status.nics:
            nic.ip = seen.get(nic.mac.lower(), nic.ip)

    return move(txn, inst, inst.status.state, rep.message or f"NIC address seen on {host.name}",
                inst.status.reason, learn)


def _adopt_unknown(c: Cluster, txn: Txn, host: pb.Host, rep: nr.InstanceReport) -> None:
    spec = rep.spec
    if spec.name in c.instance_ids:
        log.warning("host %s runs unknown instance %d named %r, a name already taken; left alone",
                    host.name, rep.instance_id, spec.name)
        return
    try:  # what a node says it runs is checked as a user's request is
        v.check_name("instance", spec.name)
        asked = instances.checked_spec(c, txn, spec.owner, spec.spec)
    except ServiceError as exc:
        log.warning("host %s runs unknown instance %d that is not valid (%s); left alone",
                    host.name, rep.instance_id, exc.message)
        return
    if len(spec.status.nics) != len(asked.nics):
        log.warning("host %s runs unknown instance %d whose NICs do not match; left alone",
                    host.name, rep.instance_id)
        return
    inst = pb.Instance(id=rep.instance_id, name=spec.name, owner=spec.owner, spec=asked)
    inst.status.state = rep.state
    inst.status.host_id, inst.status.host_name = host.id, host.name
    inst.status.vm_id = rep.vm_id
    inst.status.nics.extend(spec.status.nics)
    if inst.owner not in c.user_ids:
        inst.owner = c.cfg.admins[0] if c.cfg.admins else inst.owner
    inst.create_time.GetCurrentTime()
    inst.update_time.GetCurrentTime()
    key = "next_instance_id"
    txn.meta[key] = max(txn.meta.get(key) or c.meta.get(key) or 1, inst.id + 1)
    txn.put(inst, pb.EVENT_TYPE_INSTANCE_CREATED, f"registered from what {host.name} runs")


def expire_hosts(c: Cluster) -> int:
    """Mark hosts not heard from in time down; their instances become Orphaned."""
    limit = c.cadence.expire
    now = time.monotonic()
    with c.lock:
        silent = [h for h in c.hosts.values()
                  if h.up and now - c.heartbeats.get(h.id, 0.0) > limit]
        if not silent:
            return 0

        def body(txn: Txn) -> None:
            reasons = {}
            for host in silent:
                new = copy_of(host)
                new.up = False
                reason = f"host {host.name} stopped answering (no heartbeat for {limit:g} s)"
                txn.put(new, pb.EVENT_TYPE_HOST_UPDATED, reason)
                reasons[host.id] = reason
            # Each silent host's own instances, from the index of what each host is
            # charged for (every state that can be orphaned holds its host), never a
            # pass over all of them: a few hosts going silent in a cluster of 20,000
            # instances must not hold the lock for a scan of all.  A start still in
            # flight is not orphaned: the CM's own call to the host settles it
            # (Running, or Held with the reason), whereas an Orphaned instance the
            # host does not list when it registers again is removed, and a VM that
            # never started would be lost with it.
            ids = sorted({iid for host in silent for iid in c.charged.get(host.id, ())})
            for iid in ids:
                inst = c.instances[iid]
                reason = reasons.get(inst.status.host_id, "")
                if reason and inst.status.state in ORPHANABLE:
                    move(txn, inst, pb.INSTANCE_STATE_ORPHANED, reason, reason)

        c.write("tashi-cm", body)
        return len(silent)


def forgive_stall(c: Cluster, seconds: float) -> None:
    """The CM itself did not run for `seconds` (SIGSTOPped, its machine or VM frozen,
    starved of CPU): no heartbeat could be heard meanwhile, so that time is not
    counted against any host.  Without this a CM waking from a pause longer than
    the expiry marked every host down and orphaned every VM, then took
    them all back at the re-registrations a moment later."""
    now = time.monotonic()
    with c.lock:
        for host_id, heard in c.heartbeats.items():
            c.heartbeats[host_id] = min(now, heard + seconds)
    log.warning("the cluster manager did not run for %.1f s (paused or starved); that time "
                "is not counted against the hosts' heartbeats", seconds)


def _grace(c: Cluster, seconds: float) -> None:
    """Every host has at least `seconds` from now to be heard: when the CM hears
    again after a mass silence, the beats still queued behind the others' come in
    over the next seconds, and the hosts the silence left near or past the expiry
    must not go down before theirs are read."""
    now = time.monotonic()
    with c.lock:
        for host_id, heard in c.heartbeats.items():
            c.heartbeats[host_id] = max(heard, min(now, now - c.cadence.expire + seconds))


# Mass silence: with at least MASS_HOSTS hosts up, more than half of them each
# silent for over half the expiry at once.  The likelier cause is this CM not
# hearing them (its CPU or its threads taken, its own link) rather than half the
# fleet failing together: measured at 1,000 hosts, heartbeats queued for 4-7 s
# at the CM while it took 20,000 VMs, and every host went down within 20 s.  As
# for a stall, no host goes down for it, for at most MASS_GRACE x the expiry
# in a row: a real mass failure is still seen, that much
# later.  Smaller clusters are left to the plain rule.
MASS_HOSTS = 20
MASS_GRACE = 2.0


def mass_silence(c: Cluster) -> bool:
    """Under the lock: at least MASS_HOSTS hosts up, more than half of them each
    unheard for over half the expiry."""
    half = c.cadence.expire / 2
    now = time.monotonic()
    up = [h.id for h in c.hosts.values() if h.up]
    if len(up) < MASS_HOSTS:
        return False
    quiet = sum(1 for hid in up if now - c.heartbeats.get(hid, 0.0) > half)
    return 2 * quiet > len(up)


class LivenessMonitor(threading.Thread):
    def __init__(self, cluster: Cluster, interval: float = 0.5) -> None:
        super().__init__(name="liveness", daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.stopping = threading.Event()
        self.silence_since: float | None = None  # start of a mass silence

    def run(self) -> None:
        last = time.monotonic()
        while not self.stopping.wait(self.interval):
            # A wait of `interval` that took far longer: this process was not running.
            stalled = time.monotonic() - last - self.interval
            try:
                if stalled > max(1.0, 2 * self.interval):
                    forgive_stall(self.cluster, stalled)
                if self.cluster.beats is not None:
                    self.cluster.beats.pulse()
                with self.cluster.lock:  # the check and the expiry see one state
                    self.hear()
                    if not self.holding(time.monotonic()):
                        expire_hosts(self.cluster)
            except Exception:  # keep watching; the next round retries
                log.exception("liveness check failed")
            last = time.monotonic()

    def hear(self) -> None:
        """Under the lock: the cadence for the fleet's size, and what the liveness
        process heard (cm/beats.py)."""
        c = self.cluster
        c.cadence, c.cadence_shrunk_at = settle(c.cadence, c.cadence_shrunk_at,
                                                cadence(c.cfg, len(c.hosts)), time.monotonic())
        if c.beats is not None:
            c.beats.ensure(len(c.hosts))
            c.beats.merge(((h.id, h.up) for h in c.hosts.values()), c.heartbeats,
                          c.cadence.interval, c.cadence.expire)

    def holding(self, now: float) -> bool:
        """Under the lock: True while a mass silence holds expiry (up to its grace);
        when it ends, the hosts still unheard get half an expiry from then."""
        c = self.cluster
        limit = c.cadence.expire
        if not mass_silence(c):
            if self.silence_since is not None:
                log.warning("heartbeats heard from most hosts again after %.1f s; the others "
                            "have half the expiry from now", now - self.silence_since)
                self.silence_since = None
                _grace(c, limit / 2)
            return False
        if self.silence_since is None:
            self.silence_since = now
            log.warning("most hosts have not been heard for %.1f s at once: taken as this "
                        "cluster manager not hearing them; no host goes down for it for up "
                        "to %.0f s", limit / 2, MASS_GRACE * limit)
        return now - self.silence_since <= MASS_GRACE * limit

    def stop(self) -> None:
        self.stopping.set()
