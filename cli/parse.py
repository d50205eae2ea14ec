"""Tashi's argument formats: --disks IMG[:persistent],..  --nics NET[:IP[:MAC]],..
--hints K=V,.."""

from __future__ import annotations

from tashi.cli.context import UsageError
from tashi.v1 import resources_pb2 as pb


def disks(text: str) -> list[pb.Disk]:
    out = []
    for item in filter(None, text.split(",")):
        uri, _, flag = item.partition(":")
        if flag not in ("", "persistent", "nonpersistent"):
            raise UsageError(f"disk {item!r}: write IMAGE or IMAGE:persistent")
        out.append(pb.Disk(uri=uri, persistent=flag == "persistent"))
    return out


def nics(text: str) -> list[pb.Nic]:
    out = []
    for item in filter(None, text.split(",")):
        parts = item.split(":", 2)
        try:
            network = int(parts[0]) if parts[0] else 0
        except ValueError:
            raise UsageError(f"NIC {item!r}: the network is a number (NETWORK[:IP[:MAC]])") \
                from None
        out.append(pb.Nic(network_id=network, ip=parts[1] if len(parts) > 1 else "",
                          mac=parts[2] if len(parts) > 2 else ""))
    return out


def hints(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"hint {item!r}: write KEY=VALUE")
        out[key] = value
    return out
