"""Checks on what the CM asks for, before anything on the host is touched."""

from __future__ import annotations

import re

from tashi.nm.errors import InvalidArgument
from tashi.nm.libvirt.domain_xml import MAX_DISKS
from tashi.nm.model import VmSpec

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Keys the NM reads from an instance's hints.
HINT_KERNEL = "kernel"
HINT_INITRD = "initrd"
HINT_CMDLINE = "cmdline"
MAX_CMDLINE = 2048


def check_spec(spec: VmSpec) -> None:
    if spec.instance_id <= 0:
        raise InvalidArgument("instance id must be positive")
    if spec.cores < 1:
        raise InvalidArgument(f"cores must be at least 1, got {spec.cores}")
    if spec.memory_mib < 1:
        raise InvalidArgument(f"memory must be at least 1 MiB, got {spec.memory_mib}")
    if len(spec.disks) > MAX_DISKS:
        raise InvalidArgument(f"at most {MAX_DISKS} disks, got {len(spec.disks)}")
    for nic in spec.nics:
        if nic.mac and not _MAC.match(nic.mac.lower()):
            raise InvalidArgument(f"NIC MAC address {nic.mac!r} is not of the form "
                                  "52:54:00:12:34:56")
        if nic.mac and int(nic.mac[:2], 16) & 1:
            raise InvalidArgument(f"NIC MAC address {nic.mac!r} is a multicast address")
    cmdline = spec.hints.get(HINT_CMDLINE, "")
    if len(cmdline) > MAX_CMDLINE:
        raise InvalidArgument(f"hint {HINT_CMDLINE} is longer than {MAX_CMDLINE} characters")
    if (spec.hints.get(HINT_INITRD) or cmdline) and not spec.hints.get(HINT_KERNEL):
        raise InvalidArgument(f"hints {HINT_INITRD}/{HINT_CMDLINE} need hint {HINT_KERNEL}")
