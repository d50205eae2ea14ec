"""The libvirt driver: Tashi's VM operations on one host's libvirt.

Domains are transient (created, never defined): a VM that exits leaves no
definition behind, and one that runs survives an NM restart inside libvirt,
where its `<metadata>` lets the next NM re-adopt it.  Keeping the table of
VMs in step with libvirt (events, adoption, resync) is `sync.VmTable`'s;
this module holds the operations, which apply what they did at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import libvirt

from tashi.nm.console import ConsoleLog, ConsoleSession, log_files
from tashi.nm.driver import Driver
from tashi.nm.errors import (
    AlreadyExists,
    FailedPrecondition,
    HypervisorError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from tashi.nm.gate import StartGate
from tashi.nm.libvirt import domain_xml as dx
from tashi.nm.libvirt import guest, migration
from tashi.nm.libvirt.console import LibvirtConsole
from tashi.nm.libvirt.disks import ImageStore, Overlays, remove_files
from tashi.nm.libvirt.host import Host
from tashi.nm.libvirt.plan import StartPlan, plan_start
from tashi.nm.libvirt.records import Managed, is_no_domain, lv_message, spec_of
from tashi.nm.libvirt.stats import DeviceTargets, read_stats, read_usage
from tashi.nm.libvirt.sync import VmTable
from tashi.nm.model import (
    EXITED,
    PAUSED,
    RUNNING,
    SHUTTING_DOWN,
    SUSPENDED,
    UNSPECIFIED,
    HostFacts,
    MigrationPaths,
    VmInfo,
    VmSpec,
    VmStats,
    VmUsage,
)
from tashi.nm.validate import check_spec
from tashi.runtime.fit import shortfall

log = logging.getLogger(__name__)

class LibvirtDriver(VmTable, Driver):
    def __init__(self, uri: str, images: str | Path, state_dir: str | Path, *,
                 domain_type: str = "qemu", reserved_memory_mib: int = 0,
                 cpu_ratio: float = 1.0) -> None:
        super().__init__()
        self.images = ImageStore(images)
        self.state_dir = Path(state_dir).resolve()
        self.overlay_dir = self.state_dir / "overlays"
        self.suspend_dir = self.state_dir / "suspend"
        self.console_dir = self.state_dir / "console"
        for d in (self.overlay_dir, self.suspend_dir, self.console_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.overlays = Overlays(self.overlay_dir)
        self.domain_type = domain_type
        self.reserved_memory_mib = reserved_memory_mib
        if cpu_ratio <= 0:
            raise ValueError(f"--cpu-ratio must be positive, got {cpu_ratio}")
        self.cpu_ratio = cpu_ratio
        self._claims = migration.Claims()
        self._gate = StartGate()
        self._facts: HostFacts | None = None
        self._targets = DeviceTargets()  # for vm_usage on drivers without bulk counters
        self.host = Host(uri, self._on_connect, self.request_resync)
        self._worker = threading.Thread(target=self._work, name="nm-events", daemon=True)
        self._worker.start()
        self.host.conn()
        self.resync()

    # -- wiring ---------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        self._events.put(None)
        for conn, cb_id in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(cb_id)
            except libvirt.libvirtError:
                pass
        self._callback_ids.clear()
        self._worker.join(timeout=5)
        self.host.close()

    # -- host -------------------------------------------------------------------
    def host_facts(self) -> HostFacts:
        """The host as libvirt sees it, its cores times the CPU ratio (the vCPUs this
        host may commit, as Nova's cpu_allocation_ratio)."""
        if self._facts is None:
            facts = self.host.facts()
            self._facts = dataclasses.replace(
                facts, cores=max(1, int(facts.cores * self.cpu_ratio)))
        return self._facts

    def capacity_mib(self) -> int:
        return max(0, self.host_facts().memory_mib - self.reserved_memory_mib)

    def _managed(self, instance_id: int) -> Managed:
        with self._lock:
            rec = self._vms.get(instance_id)
        if rec is None or rec.state == UNSPECIFIED:
            raise NotFound(f"instance {instance_id} is not running on this host")
        return rec

    def _domain(self, rec: Managed) -> libvirt.virDomain:
        try:
            return self.host.conn().lookupByName(rec.vm_id)
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                self._transition(rec, EXITED, "no longer known to libvirt")
                raise NotFound(f"instance {rec.meta.instance_id} is not running on this "
                               "host") from None
            raise HypervisorError(lv_message(exc)) from None

    def _current(self, rec: Managed, dom: libvirt.virDomain) -> VmInfo:
        try:
            state = guest.state_of(dom.state()[0])
        except libvirt.libvirtError:
            state = EXITED
        self._transition(rec, state, "stopped" if state == EXITED else "")
        return rec.info(state)

    def _reserve(self, meta: dx.TashiMetadata, vm_id: str) -> Managed:
        """Claim the instance id, its cores and its memory before anything is created.

        What is free is the host's capacity less what every VM this NM holds
        (claims of starts and incoming migrations included) uses, cores as well
        as memory, as the CM charges them; whether the VM fits is the one fit rule's.
        """
        self._drop_lapsed_claims()
        cores = self.host_facts().cores
        capacity = self.capacity_mib()
        with self._lock:
            if meta.instance_id in self._vms:
                raise AlreadyExists(f"instance {meta.instance_id} is already on this host")
            free_cores = cores - sum(r.meta.cores for r in self._vms.values())
            free_mib = capacity - sum(r.meta.memory_mib for r in self._vms.values())
            short = shortfall(free_cores, free_mib, meta.cores, meta.memory_mib)
            if short is not None:
                unit, total = ("cores", f"{cores} cores") if short.resource == "cores" else (
                    "MiB", f"{capacity} MiB after a {self.reserved_memory_mib} MiB reserve")
                raise FailedPrecondition(
                    f"instance {meta.instance_id} needs {short.needed} {unit}; this host has "
                    f"{short.free} {unit} free (of {total})")
            in_use = {d.path for r in self._vms.values() for d in r.meta.disks if d.persistent}
            for d in meta.disks:
                if d.persistent and d.path in in_use:
                    raise FailedPrecondition(f"persistent disk {d.uri!r} is in use by another "
                                             "VM on this host")
            rec = Managed(meta=meta, vm_id=vm_id)
            self._vms[meta.instance_id] = rec
        return rec

    def _claim(self, plan: StartPlan, name: str) -> Managed:
        """Reserve what `plan` needs and create its overlays; nothing is left of
        either when that fails."""
        rec = self._reserve(plan.config.metadata, name)
        rec.overlays = [str(o.path) for o in plan.overlays]
        try:
            for o in plan.overlays:
                self.overlays.create(o.base, o.fmt, o.path)
        except BaseException:
            self._release(rec)
            remove_files(rec.overlays)
            raise
        return rec

    def _release(self, rec: Managed) -> None:
        with self._lock:
            if self._vms.get(rec.meta.instance_id) is rec:
                del self._vms[rec.meta.instance_id]

    # -- start ------------------------------------------------------------------
    def _existing(self, spec: VmSpec, name: str) -> VmInfo | None:
        """A retried start finds its VM; a foreign domain of that name is a clash."""
        with self._lock:
            rec = self._vms.get(spec.instance_id)
        if rec is not None and rec.state in (RUNNING, PAUSED):
            return rec.info()
        try:
            dom = self.host.conn().lookupByName(name)
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                return None
            raise HypervisorError(lv_message(exc)) from None
        meta = self._metadata(dom)
        if meta is None or meta.instance_id != spec.instance_id:
            raise AlreadyExists(f"a domain named {name!r} already exists on this host and is "
                                f"not instance {spec.instance_id}; nothing was changed")
        adopted, _obs = self._adopt(dom)
        if adopted is None:
            raise AlreadyExists(f"domain {name!r} exists but is not running; nothing was changed")
        return adopted.info()

    def starts_held(self) -> AbstractContextManager[None]:
        return self._gate.hold()

    def start_vm(self, spec: VmSpec) -> VmInfo:
        check_spec(spec)
        name = dx.vm_name(spec.instance_id)
        with self._gate.start(), self._vm_lock(spec.instance_id):
            found = self._existing(spec, name)
            if found is not None:
                return found
            # Everything that can be refused is checked before anything is created.
            plan = plan_start(spec, name, self.images, self.overlay_dir, self.console_dir,
                              self.domain_type)
            rec = self._claim(plan, name)
            try:
                dom = self.host.conn().createXML(dx.build(plan.config), 0)
            except BaseException as exc:
                self._release(rec)
                remove_files(rec.overlays)
                if isinstance(exc, libvirt.libvirtError):
                    raise HypervisorError(f"libvirt could not start {name}: "
                                          f"{lv_message(exc)}") from None
                raise
            return self._current(rec, dom)

    # -- lifecycle ----------------------------------------------------------------
    def _act(self, instance_id: int, what: str,
             action: Callable[[libvirt.virDomain], object]) -> tuple[Managed, libvirt.virDomain]:
        rec = self._managed(instance_id)
        dom = self._domain(rec)
        try:
            action(dom)
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                self._transition(rec, EXITED, "no longer known to libvirt")
                raise NotFound(f"instance {instance_id} is not running on this host") from None
            raise HypervisorError(f"cannot {what} instance {instance_id}: "
                                  f"{lv_message(exc)}") from None
        return rec, dom

    def shutdown_vm(self, instance_id: int) -> VmInfo:
        def press(dom: libvirt.virDomain) -> None:
            try:
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG,
                                                libvirt.VIR_ERR_NO_SUPPORT):
                    raise
                dom.shutdown()  # drivers without the flag (the test driver)

        with self._vm_lock(instance_id):
            rec, dom = self._act(instance_id, "shut down", press)
            info = self._current(rec, dom)
            return info if info.state == EXITED else rec.info(SHUTTING_DOWN)

    def destroy_vm(self, instance_id: int) -> VmInfo:
        with self._vm_lock(instance_id):
            rec, _dom = self._act(instance_id, "destroy", lambda d: d.destroy())
            self._transition(rec, EXITED, "destroyed")
            return rec.info(EXITED)

    def pause_vm(self, instance_id: int) -> VmInfo:
        with self._vm_lock(instance_id):
            rec = self._managed(instance_id)
            if rec.state == PAUSED:
                return rec.info()
            rec, dom = self._act(instance_id, "pause", lambda d: d.suspend())
            return self._current(rec, dom)

    def unpause_vm(self, instance_id: int) -> VmInfo:
        with self._vm_lock(instance_id):
            rec = self._managed(instance_id)
            if rec.state == RUNNING:
                return rec.info()
            rec, dom = self._act(instance_id, "unpause", lambda d: d.resume())
            return self._current(rec, dom)

    def suspend_file(self, instance_id: int) -> Path:
        return self.suspend_dir / f"{dx.vm_name(instance_id)}.save"

    def suspend_vm(self, instance_id: int) -> tuple[VmInfo, str]:
        with self._vm_lock(instance_id):
            rec = self._managed(instance_id)
            path = self.suspend_file(instance_id)
            rec.suspend_file = str(path)
            try:
                self._act(instance_id, "suspend", lambda d: d.save(str(path)))
            except BaseException:
                rec.suspend_file = ""
                remove_files([str(path)])
                raise
            self._transition(rec, SUSPENDED, "saved to a file", str(path))
            return rec.info(SUSPENDED), str(path)

    def _check_suspend_file(self, suspend_file: str) -> Path:
        if not suspend_file:
            raise InvalidArgument("no suspend file given")
        real = Path(os.path.realpath(suspend_file))
        if real.parent != self.suspend_dir:
            raise InvalidArgument(f"suspend file {suspend_file!r} is not in this node manager's "
                                  f"suspend directory {self.suspend_dir}")
        if not real.is_file():
            raise NotFound(f"suspend file {suspend_file!r} does not exist on this host")
        return real

    def resume_vm(self, spec: VmSpec, suspend_file: str) -> VmInfo:
        check_spec(spec)
        path = self._check_suspend_file(suspend_file)
        with self._gate.start(), self._vm_lock(spec.instance_id):
            with self._lock:
                rec0 = self._vms.get(spec.instance_id)
            if rec0 is not None and rec0.state in (RUNNING, PAUSED):
                return rec0.info()
            conn = self.host.conn()
            try:
                saved = conn.saveImageGetXMLDesc(str(path), 0)
            except libvirt.libvirtError as exc:
                raise InvalidArgument(f"suspend file {suspend_file!r} is unreadable: "
                                      f"{lv_message(exc)}") from None
            try:
                meta = dx.parse_metadata(saved)
            except (ValueError, ET.ParseError):
                raise InvalidArgument(f"suspend file {suspend_file!r} holds no Tashi VM") from None
            if meta.instance_id != spec.instance_id:
                raise InvalidArgument(f"suspend file {suspend_file!r} holds instance "
                                      f"{meta.instance_id}, not {spec.instance_id}")
            missing = [d.path for d in meta.disks if not os.path.exists(d.path)]
            if missing:
                raise FailedPrecondition(f"the suspended VM's disks are not on this host: "
                                         f"{', '.join(missing)}")
            name = ET.fromstring(saved).findtext("name") or dx.vm_name(spec.instance_id)
            rec = self._reserve(meta, name)
            rec.overlays = [d.path for d in meta.disks if not d.persistent]
            try:
                conn.restore(str(path))
                dom = conn.lookupByName(name)
            except libvirt.libvirtError as exc:
                self._release(rec)
                raise HypervisorError(f"libvirt could not restore {name}: "
                                      f"{lv_message(exc)}") from None
            remove_files([str(path)])
            return self._current(rec, dom)

    # -- migration hooks ---------------------------------------------------------
    def prepare_receive(self, spec: VmSpec) -> tuple[str, MigrationPaths]:
        """Check the VM fits, claim it and make its overlays ready here (over the
        same bases, in this host's state dir).  The cookie names the claim; the
        paths tell the source where this host keeps the VM's files.  A retry
        replaces a claim an earlier attempt left."""
        check_spec(spec)
        name = dx.vm_name(spec.instance_id)
        with self._vm_lock(spec.instance_id):
            self._drop_claim(spec.instance_id)
            plan = plan_start(spec, name, self.images, self.overlay_dir, self.console_dir,
                              self.domain_type)
            self._claim(plan, name)
            cookie = self._claims.make(spec.instance_id)
        cfg = plan.config
        return cookie, MigrationPaths(disks=tuple(d.path for d in cfg.disks), kernel=cfg.kernel,
                                      initrd=cfg.initrd, console_log=cfg.console_log)

    def _drop_claim(self, instance_id: int) -> None:
        """Forget an expected migration of `instance_id` and what it made ready."""
        self._claims.forget(instance_id)
        with self._lock:
            rec = self._vms.get(instance_id)
            if rec is None or rec.state != UNSPECIFIED:
                return
            del self._vms[instance_id]
        remove_files(rec.overlays)

    def _drop_lapsed_claims(self) -> None:
        for iid in self._claims.lapsed():
            with self._vm_lock(iid):
                self._drop_claim(iid)

    def prepare_source(self, instance_id: int) -> VmInfo:
        rec = self._managed(instance_id)
        if rec.state != RUNNING:
            raise FailedPrecondition(f"instance {instance_id} is not running")
        return rec.info()

    def send_vm(self, instance_id: int, target_uri: str, cookie: str,
                paths: MigrationPaths | None = None) -> VmInfo:
        migration.check_target_uri(target_uri)
        with self._vm_lock(instance_id):
            rec = self._managed(instance_id)
            dom = self._domain(rec)
            copy = tuple(dx.disk_target(i) for i, d in enumerate(rec.meta.disks)
                         if not d.persistent)
            migration.send(dom, target_uri, copy, instance_id, paths)
            with self._lock:
                if self._vms.get(instance_id) is rec:
                    del self._vms[instance_id]
            remove_files(rec.overlays)
            return rec.info(RUNNING)

    def _arrived(self, instance_id: int) -> Managed | None:
        """The migrated VM, adopted, if it runs here now."""
        try:
            dom = self.host.conn().lookupByName(dx.vm_name(instance_id))
        except libvirt.libvirtError:
            return None
        with self._lock:
            claim = self._vms.pop(instance_id, None)
        rec, _obs = self._adopt(dom)
        if rec is None:
            with self._lock:
                if claim is not None:
                    self._vms.setdefault(instance_id, claim)
        return rec

    def receive_vm(self, instance_id: int, cookie: str) -> VmInfo:
        self._drop_lapsed_claims()
        token, claimed = self._claims.expected(cookie)
        if claimed != instance_id:
            raise NotFound(f"no migration of instance {instance_id} is expected here")
        with self._vm_lock(instance_id):
            rec = self._arrived(instance_id)
            if rec is None:
                raise FailedPrecondition(f"instance {instance_id} has not arrived or is not "
                                         "running")
            self._claims.take(token)
            return rec.info()

    def cancel_receive(self, instance_id: int, cookie: str) -> VmInfo | None:
        """End an expected migration that failed: the claim and its overlays go at
        once, unless the VM did arrive (then it is kept and returned)."""
        self._claims.expected(cookie)  # only a cookie this NM made
        with self._vm_lock(instance_id):
            rec = self._arrived(instance_id)
            if rec is not None:
                self._claims.forget(instance_id)
                return rec.info()
            self._drop_claim(instance_id)
            return None

    # -- queries ------------------------------------------------------------------
    def get_vm(self, instance_id: int) -> VmInfo:
        rec = self._managed(instance_id)
        return self._current(rec, self._domain(rec))

    def list_vms(self) -> list[VmInfo]:
        with self._lock:
            recs = [r for r in self._vms.values() if r.state != UNSPECIFIED]
        return sorted((r.info() for r in recs), key=lambda v: v.instance_id)

    def vm_spec(self, instance_id: int) -> VmSpec | None:
        with self._lock:
            rec = self._vms.get(instance_id)
        return spec_of(rec.meta) if rec is not None else None

    def vm_stats(self, instance_id: int) -> VmStats:
        rec = self._managed(instance_id)
        dom = self._domain(rec)
        try:
            return read_stats(dom, instance_id)
        except libvirt.libvirtError as exc:
            raise HypervisorError(lv_message(exc)) from None

    def vm_usage(self) -> dict[int, VmUsage]:
        with self._lock:
            wanted = {r.vm_id: iid for iid, r in self._vms.items() if r.state != UNSPECIFIED}
        try:
            return read_usage(self.host.conn(), wanted, self._targets)
        except libvirt.libvirtError as exc:
            raise HypervisorError(lv_message(exc)) from None

    # -- the serial console ---------------------------------------------------------
    def console_log(self, instance_id: int) -> ConsoleLog:
        """virtlogd writes (and rotates) it at the path the domain XML names: the
        same path on every host, so a VM that migrated here goes on in this
        host's file.  A VM counts as here while this NM holds it (starting,
        running, paused, or expected by a migration)."""
        path = self.console_dir / f"{dx.vm_name(instance_id)}.log"

        def running() -> bool:
            with self._lock:
                return instance_id in self._vms

        if not running() and not log_files(path):
            raise NotFound(f"instance {instance_id} is not on this host and left no "
                           "console log here")
        return ConsoleLog(path, running)

    def open_console(self, instance_id: int) -> ConsoleSession:
        rec = self._managed(instance_id)
        dom = self._domain(rec)
        try:
            conn = self.host.conn()
            return LibvirtConsole(conn, dom, instance_id)
        except libvirt.libvirtError as exc:
            raise Unavailable(f"cannot open the console of instance {instance_id}: "
                              f"{lv_message(exc)}") from None
