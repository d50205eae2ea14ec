"""The hypervisor driver contract the servicer and reporter program against.

One implementation (libvirt, `tashi.nm.libvirt`) serves both the simulated
host (`test:///node.xml`) and real QEMU; the contract stays small so another
hypervisor could slot in.  Every method raises `tashi.nm.errors.NmError`
subclasses on failure, and operations on an unmanaged VM raise `NotFound`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from tashi.nm.console import ConsoleLog, ConsoleSession
from tashi.nm.errors import FailedPrecondition
from tashi.nm.model import (
    HostFacts,
    MigrationPaths,
    Observation,
    VmInfo,
    VmSpec,
    VmStats,
    VmUsage,
)

ChangeListener = Callable[[Observation], None]


class Driver(ABC):
    def starts_held(self) -> AbstractContextManager[None]:
        """Holds VM starts while the reporter takes and delivers a registration
        (nm/gate.py); drivers whose starts cannot race it need nothing."""
        return nullcontext()

    @abstractmethod
    def host_facts(self) -> HostFacts: ...

    @abstractmethod
    def set_listener(self, listener: ChangeListener) -> None:
        """Called (from the driver's event thread) for every change it observes."""

    @abstractmethod
    def start_vm(self, spec: VmSpec) -> VmInfo: ...

    @abstractmethod
    def shutdown_vm(self, instance_id: int) -> VmInfo: ...

    @abstractmethod
    def destroy_vm(self, instance_id: int) -> VmInfo: ...

    @abstractmethod
    def pause_vm(self, instance_id: int) -> VmInfo: ...

    @abstractmethod
    def unpause_vm(self, instance_id: int) -> VmInfo: ...

    @abstractmethod
    def suspend_vm(self, instance_id: int) -> tuple[VmInfo, str]:
        """Save to a file and stop; returns the file's path."""

    @abstractmethod
    def resume_vm(self, spec: VmSpec, suspend_file: str) -> VmInfo: ...

    @abstractmethod
    def prepare_receive(self, spec: VmSpec) -> tuple[str, MigrationPaths]:
        """Get ready to receive a migrating VM; returns the cookie the source passes
        on and where this host keeps the VM's files."""

    @abstractmethod
    def prepare_source(self, instance_id: int) -> VmInfo: ...

    @abstractmethod
    def send_vm(self, instance_id: int, target_uri: str, cookie: str,
                paths: MigrationPaths | None = None) -> VmInfo: ...

    @abstractmethod
    def receive_vm(self, instance_id: int, cookie: str) -> VmInfo: ...

    @abstractmethod
    def cancel_receive(self, instance_id: int, cookie: str) -> VmInfo | None:
        """Drop an expected migration at once; the VM if it did arrive (kept)."""

    @abstractmethod
    def get_vm(self, instance_id: int) -> VmInfo: ...

    @abstractmethod
    def vm_stats(self, instance_id: int) -> VmStats: ...

    @abstractmethod
    def list_vms(self) -> list[VmInfo]: ...

    @abstractmethod
    def vm_usage(self) -> dict[int, VmUsage]:
        """Usage of every running VM this driver manages, by instance id, read at
        once (a VM that went away meanwhile is left out).  Called at every metrics
        scrape, so it should be one cheap read; it may block while the hypervisor
        hangs, and the caller bounds the wait."""

    @abstractmethod
    def vm_spec(self, instance_id: int) -> VmSpec | None:
        """The spec a managed VM was started from (read back from its metadata)."""

    @abstractmethod
    def resync(self) -> list[Observation]:
        """Re-read the hypervisor (safety net for missed events); returns the changes found."""

    @abstractmethod
    def close(self) -> None: ...

    # -- the serial console (not abstract: a driver without consoles refuses) ------
    def console_log(self, instance_id: int) -> ConsoleLog:
        """Where the VM's serial console is logged on this host (its rotated files
        beside it); NotFound when the VM neither runs here nor left a log."""
        raise FailedPrecondition("this host's hypervisor driver keeps no console logs")

    def open_console(self, instance_id: int) -> ConsoleSession:
        """An interactive session on the running VM's serial port."""
        raise FailedPrecondition("this host's hypervisor driver has no interactive consoles")
