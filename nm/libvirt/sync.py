"""The node manager's table of VMs, kept in step with libvirt.

State changes come from libvirt's lifecycle events, handled on a worker
thread that re-reads the domain's current state under the VM's lock (so a
stale event never reports a state the VM already left, nor one a call in
flight is settling); a resync compares the whole of libvirt with the table,
adopting Tashi's domains it does not know.  A repeated state is never
reported twice.  `LibvirtDriver` builds on it with the operations.
"""

from __future__ import annotations

import logging
import queue
import threading
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from tashi.nm.driver import ChangeListener
from tashi.nm.errors import NmError, Unavailable
from tashi.nm.libvirt import domain_xml as dx
from tashi.nm.libvirt import guest
from tashi.nm.libvirt.disks import remove_files
from tashi.nm.libvirt.host import Host
from tashi.nm.libvirt.records import Managed, spec_of
from tashi.nm.model import EXITED, PAUSED, RUNNING, SUSPENDED, UNSPECIFIED, Observation

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0
DEFER_SECONDS = 0.05  # an event met a call in flight on its VM: handled again after this

_STOP_REASONS = {0: "the guest powered off", 1: "destroyed", 2: "the guest crashed",
                 4: "saved to a file", 5: "the hypervisor failed"}


class VmTable:
    """The VMs this node manager holds, and how libvirt's news reaches them."""

    host: Host

    def __init__(self) -> None:
        self._listener: ChangeListener = lambda _obs: None
        self._lock = threading.Lock()  # guards _vms and _vm_locks
        self._vms: dict[int, Managed] = {}
        self._vm_locks: dict[int, threading.Lock] = {}
        self._events: queue.Queue[tuple[str, int, int] | None] = queue.Queue()
        self._callback_ids: list[tuple[libvirt.virConnect, int]] = []
        self._resync_lock = threading.Lock()
        self._closed = False

    def set_listener(self, listener: ChangeListener) -> None:
        self._listener = listener

    def _on_connect(self, conn: libvirt.virConnect) -> None:
        cb_id = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                            self._on_lifecycle, None)
        self._callback_ids.append((conn, cb_id))
        if self._callback_ids[:-1]:  # a reconnect: catch up on what happened meanwhile
            self.request_resync()

    def _on_lifecycle(self, _conn: Any, dom: libvirt.virDomain, event: int, detail: int,
                      _opaque: Any) -> None:
        # Runs on libvirt's event thread: hand off at once, never call libvirt here.
        self._events.put((dom.name(), event, detail))

    # -- events ---------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            name, event, detail = item
            try:
                if event < 0:
                    self.resync()
                else:
                    self._handle_event(name, event, detail)
            except Unavailable as exc:  # libvirtd is away: try again shortly
                log.warning("%s; retrying in %.0f s", exc.message, RECONNECT_SECONDS)
                if not self._closed:
                    retry = threading.Timer(RECONNECT_SECONDS, self.request_resync)
                    retry.daemon = True
                    retry.start()
            except NmError as exc:
                log.warning("handling libvirt event for %s: %s", name or "resync", exc.message)
            except Exception:
                log.exception("handling libvirt event for %s", name)

    def _find(self, vm_id: str) -> Managed | None:
        with self._lock:
            for rec in self._vms.values():
                if rec.vm_id == vm_id:
                    return rec
        return None

    def _handle_event(self, name: str, event: int, detail: int) -> None:
        implied = guest.state_after_event(event, detail)
        if event == guest.EV_STOPPED:
            if implied == UNSPECIFIED:
                return  # migrated away: send_vm settles it
            rec = self._find(name)
            if rec is None or rec.state == UNSPECIFIED:
                return
            lock = self._vm_lock(rec.meta.instance_id)
            if not lock.acquire(blocking=False):
                # A call on this VM is in flight (a shutdown that ends it, a resume that
                # revives it ...): look again once it is done, so a stale stop never
                # ends a VM the call just settled, nor a real one goes unreported.
                self._defer(name, event, detail)
                return
            try:
                if self._running_again(name):
                    return  # a stop that is already history (restored, restarted): stale
                self._transition(rec, implied, _STOP_REASONS.get(detail, "stopped"))
            finally:
                lock.release()
            return
        if implied == UNSPECIFIED:
            return
        rec = self._find(name)
        if rec is None:
            try:
                dom = self.host.conn().lookupByName(name)
                state = guest.state_of(dom.state()[0])
            except libvirt.libvirtError:
                return  # gone again; its STOPPED event follows
            if state in (RUNNING, PAUSED):
                self._adopt(dom)  # started behind our back, or arrived by migration
            return
        self._settle(rec)

    def _settle(self, rec: Managed) -> Observation | None:
        """Record the state libvirt now gives a VM, unless a call on it is in flight
        (the call reports its own outcome).  The state is read under the VM's lock:
        read outside it, a pause seen just before an unpause completed was reported
        after it, out of order."""
        lock = self._vm_lock(rec.meta.instance_id)
        if not lock.acquire(blocking=False):
            return None
        try:
            if rec.state == UNSPECIFIED:
                return None  # a start still in progress
            try:
                state = guest.state_of(self.host.conn().lookupByName(rec.vm_id).state()[0])
            except libvirt.libvirtError:
                return None  # gone: its STOPPED event, or the resync's vanished check, says so
            return self._transition(rec, state)
        finally:
            lock.release()

    def _defer(self, name: str, event: int, detail: int) -> None:
        if self._closed:
            return
        later = threading.Timer(DEFER_SECONDS, self._events.put, [(name, event, detail)])
        later.daemon = True
        later.start()

    def _running_again(self, name: str) -> bool:
        try:
            return bool(self.host.conn().lookupByName(name).isActive())
        except libvirt.libvirtError:
            return False

    def _transition(self, rec: Managed, state: int, message: str = "",
                    suspend_file: str = "") -> Observation | None:
        """Record a state the VM is now in and tell the listener, once per change."""
        with self._lock:
            if rec.state == state or self._vms.get(rec.meta.instance_id) is not rec:
                return None
            rec.state = state
            gone = state in (EXITED, SUSPENDED)
            if gone:
                del self._vms[rec.meta.instance_id]
            suspend_file = suspend_file or rec.suspend_file
        if state == EXITED:
            remove_files(rec.overlays)
        obs = Observation(vm=rec.info(), message=message,
                          suspend_file=suspend_file if state == SUSPENDED else "",
                          spec=spec_of(rec.meta))
        self._listener(obs)
        return obs

    # -- adoption and resync ----------------------------------------------------
    def _metadata(self, dom: libvirt.virDomain) -> dx.TashiMetadata | None:
        try:
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError:
            return None
        try:
            return dx.parse_metadata(xml)
        except (ValueError, ET.ParseError):
            return None  # not Tashi's: never touched

    def _adopt(self, dom: libvirt.virDomain) -> tuple[Managed | None, Observation | None]:
        meta = self._metadata(dom)
        if meta is None:
            return None, None
        try:
            state = guest.state_of(dom.state()[0])
        except libvirt.libvirtError:
            return None, None
        if state not in (RUNNING, PAUSED):
            return None, None
        rec = Managed(meta=meta, vm_id=dom.name(),
                      overlays=[d.path for d in meta.disks if not d.persistent])
        with self._lock:
            if meta.instance_id in self._vms:
                return self._vms[meta.instance_id], None
            self._vms[meta.instance_id] = rec
        log.info("adopted %s (instance %d of %s)", rec.vm_id, meta.instance_id, meta.owner)
        return rec, self._transition(rec, state, "adopted by the node manager")

    def resync(self) -> list[Observation]:
        """Compare libvirt with what we believe; adopt, update and drop accordingly."""
        seen: list[Observation | None] = []
        with self._resync_lock:
            # Only a VM settled before the listing can have vanished from it: one a
            # start (or an incoming migration) brings up meanwhile runs in libvirt
            # but may be missing from the listing, and calling it gone made the CM
            # delete a running instance (bench_fleet at 1,000 hosts, with churn).
            with self._lock:
                settled = [r for r in self._vms.values() if r.state != UNSPECIFIED]
            conn = self.host.conn()
            live: set[str] = set()
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                name = dom.name()
                rec = self._find(name)
                if rec is None:
                    adopted, obs = self._adopt(dom)
                    seen.append(obs)
                    if adopted is not None:
                        live.add(adopted.vm_id)
                    continue
                live.add(name)
                seen.append(self._settle(rec))
            with self._lock:
                vanished = [r for r in settled if self._vms.get(r.meta.instance_id) is r
                            and r.vm_id not in live and r.state != UNSPECIFIED]
            for rec in vanished:
                seen.append(self._transition(rec, EXITED, "no longer known to libvirt"))
        return [o for o in seen if o is not None]

    def request_resync(self) -> None:
        """Resync on the event thread, in order with the events."""
        self._events.put(("", -1, 0))

    def _vm_lock(self, instance_id: int) -> threading.Lock:
        with self._lock:
            return self._vm_locks.setdefault(instance_id, threading.Lock())

