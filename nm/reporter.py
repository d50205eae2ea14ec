"""Keeps the cluster manager told: registration, heartbeats, state reports.

Reports are numbered (`report_seq`, from a microsecond clock so a restarted
NM keeps counting upward) and buffered in order.  While the CM cannot be
reached the VMs keep running and reports pile up; when it answers again the
buffer is delivered oldest first, then, if the CM no longer counts this host
as registered (it restarted, or marked the host down), the NM registers anew
with a full list of what it runs.  Nothing is dropped before the CM says it
applied it (`applied_seq`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable

import grpc

from tashi.nm.answering import Answering
from tashi.nm.convert import report_pb
from tashi.nm.driver import Driver
from tashi.nm.model import Observation
from tashi.runtime.client import ClusterClient, LivenessClient, TashiError
from tashi.runtime.version import VERSION
from tashi.v1 import node_registry_pb2 as reg
from tashi.v1 import resources_pb2 as pb

log = logging.getLogger(__name__)

MAX_BATCH = 500
CALL_TIMEOUT = 5.0
# Longest heartbeat interval a CM may ask for (1,000 hosts at its default rate
# ask 5 s; this is 60,000 hosts at it).
MAX_ASKED_INTERVAL = 300.0

NetworkStatus = Callable[[], list[pb.HostNetworkStatus]]
# Longest a report an answer already told may wait (a configured hold beyond it
# is taken as this).
MAX_HOLD = 300.0
# States a start's answer tells the CM itself.
ANSWERED = frozenset({pb.INSTANCE_STATE_RUNNING, pb.INSTANCE_STATE_PAUSED})


class ReportClock:
    """The node manager's report_seq: a microsecond clock that never repeats or goes
    back within this process, shared by the reports, the registration's list and
    the answers of starts (the CM orders what it learns from this host by it).
    `incarnation` tells this process's numbering from an earlier one's, whose
    clock may have been ahead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = time.time_ns() // 1000
        self.incarnation = secrets.randbits(62) + 1

    def next(self) -> int:
        with self._lock:
            self._seq = max(self._seq + 1, time.time_ns() // 1000)
            return self._seq


class Reporter:
    def __init__(self, driver: Driver, client: ClusterClient, hostname: str, nm_address: str,
                 *, capabilities: pb.HostCapabilities | None = None,
                 reserved_memory_mib: int = 0, heartbeat_seconds: float = 2.0,
                 resync_seconds: float = 60.0, network_status: NetworkStatus | None = None,
                 clock: ReportClock | None = None, answering: Answering | None = None,
                 answered_hold_seconds: float = 30.0) -> None:
        """`answering`: the starts being answered (shared with the servicer); the
        report of a VM one of them started waits up to `answered_hold_seconds` to
        go with other news (it goes at once with 0).  It is held, never dropped:
        if the answer is lost, the report still tells the CM."""
        self.driver = driver
        self.client = client
        self.hostname = hostname
        self.nm_address = nm_address
        self.capabilities = capabilities or pb.HostCapabilities()
        self.reserved_memory_mib = reserved_memory_mib
        self.heartbeat_seconds = heartbeat_seconds
        # The shortest interval the CM asks for (it grows with the fleet: cm/cadence.py).
        self.asked_interval = 0.0
        self.resync_seconds = resync_seconds
        self.network_status = network_status
        self.registered = False
        self.last_heartbeat = 0.0  # Unix time the CM last took a registration or heartbeat
        self.last_error = ""
        self._buffer: collections.deque[reg.InstanceReport] = collections.deque()
        self.clock = clock or ReportClock()
        self.answering = answering or Answering()
        self.answered_hold_seconds = (min(answered_hold_seconds, MAX_HOLD)
                                      if math.isfinite(answered_hold_seconds) else 0.0)
        # Whether the buffer holds news that goes at once; else, until when what
        # it holds (reports an answer already told) may wait.
        self._urgent = False
        self._hold_until = 0.0
        self._held: dict[int, reg.InstanceReport] = {}  # by instance, while buffered
        self._cond = threading.Condition()
        self._stopping = False
        self._sent_networks: list[pb.HostNetworkStatus] | None = None
        self._generation = 0  # registrations this reporter made
        # The CM's liveness process (cm/beats.py), once the CM names one: its client,
        # and the (port, host id, token) to beat with; (port, token) of one that
        # failed, not tried again until the CM names another.
        self._liveness: LivenessClient | None = None
        self._beat_with: tuple[int, int, bytes] | None = None
        self._shunned: tuple[int, bytes] = (0, b"")
        self._old_clients: list[LivenessClient] = []
        self._host_id = 0
        self._thread = threading.Thread(target=self._run, name="nm-reporter", daemon=True)
        self._beats = threading.Thread(target=self._beat, name="nm-heartbeat", daemon=True)
        driver.set_listener(self.observe)

    # -- intake -----------------------------------------------------------------
    def observe(self, obs: Observation) -> None:
        """Queue one observed change (called from the driver's event thread)."""
        iid = obs.vm.instance_id
        told = (obs.vm.state in ANSWERED and self.answered_hold_seconds > 0
                and iid in self.answering)
        with self._cond:
            report = report_pb(obs, self.clock.next())
            # A held report this one supersedes goes no more: sent after the change
            # this one tells (a pause the CM asked for), it would undo it there.
            stale = self._held.pop(iid, None)
            if stale is not None:
                with contextlib.suppress(ValueError):  # already sent
                    self._buffer.remove(stale)
            self._buffer.append(report)
            if not told:
                self._urgent = True
                self._cond.notify_all()
                return
            self._held[iid] = report
            if not self._hold_until:
                self._hold_until = time.monotonic() + self.answered_hold_seconds
                self._cond.notify_all()  # the loop's wait ends by then

    def _due(self, now: float) -> bool:
        """Under `_cond`: whether the buffer should go now."""
        return bool(self._buffer) and (self._urgent or now >= self._hold_until)

    def _drained(self) -> None:
        """Under `_cond`, once the buffer is empty."""
        if not self._buffer:
            self._urgent = False
            self._hold_until = 0.0
            self._held.clear()

    def pending(self) -> int:
        with self._cond:
            return len(self._buffer)

    # -- loop -------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._beats.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in (self._thread, self._beats):
            if thread.is_alive():
                thread.join(timeout=CALL_TIMEOUT + 1)
        for client in [*self._old_clients, *([self._liveness] if self._liveness else [])]:
            client.close()

    def _run(self) -> None:
        """Registration and reports (and the periodic resync); heartbeats go on in
        their own thread (`_beat`), so a registration or report waiting seconds
        for a busy CM's lock never holds a beat back past the host's expiry."""
        retry_at = 0.0
        next_resync = time.monotonic() + self.resync_seconds
        while True:
            now = time.monotonic()
            if now >= next_resync:
                next_resync = now + self.resync_seconds
                try:
                    self.driver.resync()  # safety net; changes arrive through observe()
                except Exception as exc:
                    log.warning("resync with the hypervisor failed: %s", exc)
            if now >= retry_at and not self._step("reporter", self._send):
                retry_at = time.monotonic() + min(self.heartbeat_seconds, 1.0)
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                if now >= retry_at and (self._due(now) or not self.registered):
                    continue  # more to send, or a heartbeat asked to register again
                # Until a change (observe), a registration asked for, the retry after
                # a failure, the end of a hold, the resync, or stop.
                until = retry_at if now < retry_at else next_resync
                if self._buffer and not self._urgent and self._hold_until > now:
                    until = min(until, self._hold_until)  # (once past, the retry's time)
                self._cond.wait(timeout=max(0.0, min(until, next_resync) - now))
                if self._stopping:
                    return

    def _beat(self) -> None:
        """Every heartbeat_seconds while registered, whatever the other thread does."""
        next_beat = time.monotonic() + self.beat_interval()
        while True:
            with self._cond:
                while not self._stopping and (time.monotonic() < next_beat
                                              or not self.registered):
                    self._cond.wait(timeout=max(0.05, next_beat - time.monotonic())
                                    if self.registered else None)
                if self._stopping:
                    return
                generation = self._generation
            next_beat = time.monotonic() + self.beat_interval()
            if not self._step("heartbeat", functools.partial(self._heartbeat, generation)):
                next_beat = time.monotonic() + min(self.heartbeat_seconds, 1.0)

    def beat_interval(self) -> float:
        return max(self.heartbeat_seconds, self.asked_interval)

    def _asked(self, seconds: float) -> None:
        """The CM's asked interval, within reason: a CM answering nonsense (negative,
        not a number, hours) does not stop the beats."""
        self.asked_interval = min(seconds, MAX_ASKED_INTERVAL) if math.isfinite(seconds) else 0.0

    def _send(self) -> None:
        """Register if the CM asks, then deliver what is buffered."""
        called = False
        if not self.registered:
            self._flush_unregistered()
            self._register()
            called = True
        if self._flush(held_too=called) or called:
            self._ok()

    def _step(self, what: str, step: Callable[[], None]) -> bool:
        """One turn of a loop; False if it failed (logged once per new error)."""
        try:
            step()
            return True
        except TashiError as exc:
            self._failed(exc)
        except Exception as exc:  # keep going whatever went wrong once
            log.exception(what)
            self._failed(TashiError(grpc.StatusCode.INTERNAL, str(exc)))
        return False

    def _ok(self) -> None:
        if self.last_error:
            log.info("cluster manager at %s reachable again", self.client.address)
        self.last_error = ""

    def _failed(self, exc: TashiError) -> None:
        text = str(exc)
        if text != self.last_error:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                log.error("cluster manager refused registration: %s", exc.message)
            else:
                log.warning("cluster manager at %s: %s (reports buffered: %d)",
                            self.client.address, text, self.pending())
        self.last_error = text

    # -- calls ------------------------------------------------------------------
    def _networks(self) -> list[pb.HostNetworkStatus]:
        return self.network_status() if self.network_status is not None else []

    def _register(self) -> None:
        facts = self.driver.host_facts()
        networks = self._networks()
        # No start finishes between taking the list and the CM reading it (nm/gate.py).
        with self.driver.starts_held():
            with self._cond:
                snapshot = []
                for vm in self.driver.list_vms():
                    snapshot.append(report_pb(
                        Observation(vm=vm, message="reported at registration",
                                    spec=self.driver.vm_spec(vm.instance_id)),
                        self.clock.next()))
                # Nothing is numbered between the list and this: everything later
                # (reports, answers of starts) is numbered above it.
                snapshot_seq = self.clock.next()
            req = reg.RegisterHostRequest(
                name=self.hostname, cores=facts.cores,
                memory_mib=max(0, facts.memory_mib - self.reserved_memory_mib),
                version=VERSION, nm_address=self.nm_address, instances=snapshot,
                networks=networks, capabilities=self.capabilities,
                snapshot_seq=snapshot_seq, incarnation=self.clock.incarnation)
            resp = self.client.call(self.client.registry.RegisterHost, req,
                                    timeout=CALL_TIMEOUT)
        self._asked(resp.heartbeat_interval_seconds)
        self._route(resp.host.id, resp.beat_port, resp.beat_token)
        self._sent_networks = networks
        self.last_heartbeat = time.time()
        with self._cond:  # the snapshot supersedes anything older still queued
            self.registered = True
            self._generation += 1
            self._cond.notify_all()  # the heartbeats go on
            while self._buffer and self._buffer[0].report_seq <= snapshot_seq:
                self._buffer.popleft()
            self._drained()
        log.info("registered as %s with %s (%d VMs, %d cores, %d MiB)", self.hostname,
                 self.client.address, len(snapshot), facts.cores, req.memory_mib)

    def _heartbeat(self, generation: int) -> None:
        """One beat; `generation`: the registration it beats for (a "register again"
        answered to a beat older than the latest registration is out of date)."""
        networks = self._networks()
        changed = networks != self._sent_networks
        beat = None if changed else self._beat_process()
        if beat is None:
            req = reg.HeartbeatRequest(name=self.hostname,
                                       networks=networks if changed else [],
                                       networks_changed=changed)
            resp = self.client.call(self.client.registry.Heartbeat, req, timeout=CALL_TIMEOUT)
            if changed:
                self._sent_networks = networks
            if resp.registered:
                self._route(self._host_id, resp.beat_port, resp.beat_token)
            registered, asked = resp.registered, resp.heartbeat_interval_seconds
        else:
            registered, asked = beat.registered, beat.heartbeat_interval_seconds
        if not registered:
            with self._cond:
                if generation != self._generation or not self.registered:
                    return
                log.info("cluster manager asks %s to register again", self.hostname)
                self.registered = False
                self._cond.notify_all()  # the reporter registers
        else:
            self._asked(asked)
            self.last_heartbeat = time.time()
            self._ok()

    def _beat_process(self) -> reg.BeatResponse | None:
        """One beat to the CM's liveness process, if it named one; None to beat the
        CM itself instead (none named, or it failed: then not again until the CM
        names another, since a liveness process whose CM is paused answers
        UNAVAILABLE so that its hosts go to the CM that leads now)."""
        liveness, beat_with = self._liveness, self._beat_with
        if liveness is None or beat_with is None:
            return None
        try:
            port, host_id, token = beat_with
            return liveness.call(liveness.liveness.Beat, reg.BeatRequest(
                host_id=host_id, token=token), timeout=CALL_TIMEOUT)
        except TashiError as exc:
            log.warning("the cluster manager's liveness process at %s: %s; heartbeats go to "
                        "the cluster manager itself", liveness.address, exc)
            self._shunned = (port, token)
            self._beat_with = None
            return None

    def _route(self, host_id: int, port: int, token: bytes) -> None:
        """What the CM said in a registration or heartbeat answer: beat its liveness
        process on `port` with `token` (0: beat the CM itself)."""
        self._host_id = host_id
        if not port or (port, token) == self._shunned:
            if not port:
                self._beat_with = None
            return
        address = self.client.liveness_address(port)
        if self._liveness is None or self._liveness.address != address:
            if self._liveness is not None:
                self._old_clients.append(self._liveness)  # a beat may be using it
            self._liveness = LivenessClient(address, self.client.user, tls=self.client.tls)
        self._beat_with = (port, host_id, token)

    def _flush_unregistered(self) -> None:
        """Deliver the history first, so the CM sees every change in order; a CM that
        does not know this host at all says so again at registration."""
        try:
            self._flush()
        except TashiError as exc:
            if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise

    def _flush(self, held_too: bool = True) -> bool:
        """Send the buffer in batches, oldest first, until it is empty (unless all
        it holds may still wait, and not `held_too`); True if a call was made."""
        sent = False
        with self._cond:
            if not held_too and not self._due(time.monotonic()):
                return False
        while True:
            with self._cond:
                batch = list(self._buffer)[:MAX_BATCH]
                if not batch:
                    self._drained()
            if not batch:
                return sent
            req = reg.ReportInstancesRequest(name=self.hostname, reports=batch)
            resp = self.client.call(self.client.registry.ReportInstances, req,
                                    timeout=CALL_TIMEOUT)
            sent = True
            sent_top = batch[-1].report_seq
            with self._cond:
                while self._buffer and self._buffer[0].report_seq <= sent_top:
                    self._buffer.popleft()
            log.debug("reported %d changes (applied up to %d)", len(batch), resp.applied_seq)
