"""The one MAC scheme of the cluster: stable per (instance, NIC), never random."""

from __future__ import annotations

# Locally administered (0x02 bit), unicast (0x01 bit clear), outside
# libvirt's and QEMU's 52:54:00 range.
MAC_PREFIX = 0x56


def stable_mac(instance_id: int, nic_index: int) -> str:
    """A MAC that stays the same for (instance, NIC) across restarts and migrations.

    Layout 56:ii:ii:ii:ii:nn -- 32 bits of instance id and the NIC index -- so
    two NICs in one cluster never share a MAC while instance ids stay below
    2**32; no hashing, hence no birthday collisions.
    """
    if instance_id < 0:
        raise ValueError(f"instance id must not be negative, got {instance_id}")
    if not 0 <= nic_index <= 0xFF:
        raise ValueError(f"NIC index must be 0..255, got {nic_index}")
    octets = [MAC_PREFIX, *(instance_id & 0xFFFFFFFF).to_bytes(4, "big"), nic_index]
    return ":".join(f"{o:02x}" for o in octets)
