"""Which instance NIC a learned address belongs to, reported to the CM once per change."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from tashi.nm.driver import Driver
from tashi.nm.model import Observation
from tashi.nm.network.dhcp import Lease

log = logging.getLogger(__name__)


class AddressTracker:
    """Turns a DHCP lease into an Observation of the VM that owns the MAC.

    The observation carries the VM's spec with the NIC's new address; the
    reporter sends it in order with the state reports, and the CM shows it
    in the instance's NICs.  A renewal of the same address reports nothing.
    """

    def __init__(self, driver: Driver, observe: Callable[[Observation], None]) -> None:
        self.driver = driver
        self.observe = observe
        self._lock = threading.Lock()
        self._known: dict[tuple[int, str], str] = {}

    def on_lease(self, lease: Lease) -> None:
        mac = lease.mac.lower()
        for vm in self.driver.list_vms():
            spec = self.driver.vm_spec(vm.instance_id)
            if spec is None:
                continue
            for index, nic in enumerate(spec.nics):
                if nic.mac.lower() != mac:
                    continue
                with self._lock:
                    if self._known.get((vm.instance_id, mac)) == lease.ip:
                        return
                    self._known[(vm.instance_id, mac)] = lease.ip
                nics = list(spec.nics)
                nics[index] = dataclasses.replace(nic, ip=lease.ip)
                message = (f"NIC {index} ({mac}) on network {nic.network_id} has address "
                           f"{lease.ip} (DHCP)")
                log.info("instance %d: %s", vm.instance_id, message)
                self.observe(Observation(vm=vm, message=message,
                                         spec=dataclasses.replace(spec, nics=tuple(nics))))
                return
