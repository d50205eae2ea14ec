"""Checks at the edge: every bad input gets a clear INVALID_ARGUMENT and changes nothing."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path, PurePosixPath

from tashi.runtime.errors import invalid, not_found
from tashi.v1 import resources_pb2 as pb

NAME_RE = re.compile(r"^[A-Za-z0-9.-]+$")
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MAX_NAME = 63
# What one instance may carry, so no user can make a listing or an event
# too big for everyone else (the 64 MB message limit), or a start too slow.
MAX_HINTS = 64
MAX_HINT_KEY = 64
MAX_HINT_VALUE = 1024
# All hints of one instance together: 1,000 instances (a default page) stay
# far below the 64 MB message limit.
MAX_HINT_BYTES = 8192
MAX_DISKS = 32
MAX_REQUEST_ID = 128
SHOWN = 40  # characters of a user's value an error message repeats


def clip(value: str) -> str:
    """A user's value for an error message: repr, cut to SHOWN characters."""
    return repr(value) if len(value) <= SHOWN else repr(value[:SHOWN]) + f"... ({len(value)} chars)"
# runtime.macs.stable_mac numbers NICs 0..255 within an instance.
MAX_NICS = 32  # a PCI bus has about 30 free slots


def check_name(kind: str, name: str) -> str:
    if not name:
        raise invalid(f"{kind} name is empty")
    if len(name) > MAX_NAME:
        raise invalid(f"{kind} name {clip(name)} is longer than {MAX_NAME} characters")
    if not NAME_RE.match(name):
        raise invalid(f"{kind} name {clip(name)} may use only letters, digits, '-' and '.'")
    if name.isdigit():
        raise invalid(f"{kind} name {name!r} is all digits, which reads as an id; add a letter")
    return name


def check_user_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise invalid(f"user name {clip(name)} may use only letters, digits, '.', '_' and '-' "
                      f"(1 to {MAX_NAME} characters)")
    return name


def check_size(cores: int, memory_mib: int, max_cores: int, max_memory_mib: int) -> None:
    if not 1 <= cores <= max_cores:
        raise invalid(f"cores must be between 1 and {max_cores}, got {cores}")
    if not 1 <= memory_mib <= max_memory_mib:
        raise invalid(f"memory must be between 1 and {max_memory_mib} MiB, got {memory_mib}")


def check_nic_count(count: int) -> None:
    if count > MAX_NICS:
        raise invalid(f"an instance may have at most {MAX_NICS} NICs, got {count}")


def check_disk_count(count: int) -> None:
    if count > MAX_DISKS:
        raise invalid(f"an instance may have at most {MAX_DISKS} disks, got {count}")


def check_hints(hints: dict[str, str]) -> None:
    if len(hints) > MAX_HINTS:
        raise invalid(f"an instance may have at most {MAX_HINTS} hints, got {len(hints)}")
    for key, value in hints.items():
        if not key or len(key) > MAX_HINT_KEY:
            raise invalid(f"hint name {clip(key)} must have 1 to {MAX_HINT_KEY} characters")
        if len(value) > MAX_HINT_VALUE:
            raise invalid(f"hint {clip(key)} is longer than {MAX_HINT_VALUE} characters")
    total = sum(len(k.encode()) + len(v.encode()) for k, v in hints.items())
    if total > MAX_HINT_BYTES:
        raise invalid(f"an instance's hints may hold {MAX_HINT_BYTES} bytes in all, got {total}")


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID:
        raise invalid(f"request_id is longer than {MAX_REQUEST_ID} characters")


def check_address_in(ip: str, net: pb.Network) -> None:
    """A fixed NIC address must lie in its network's range, when it has one."""
    if net.cidr and ipaddress.ip_address(ip) not in ipaddress.ip_network(net.cidr):
        raise invalid(f"address {ip} is outside network {net.name!r} ({net.cidr})")


def check_disk(uri: str, images: Path | None) -> None:
    if not uri:
        raise invalid("disk path is empty")
    path = PurePosixPath(uri)
    if path.is_absolute():
        raise invalid(f"disk {clip(uri)} is an absolute path; give a path inside the image store")
    if ".." in path.parts:
        raise invalid(f"disk {clip(uri)} climbs out of the image store with '..'")
    if "\x00" in uri:
        raise invalid("disk path holds a NUL byte")
    if images is not None:
        full = images / path
        if not full.resolve().is_relative_to(images.resolve()):
            raise invalid(f"disk {clip(uri)} leads outside the image store")
        if not full.is_file():
            raise not_found(f"image {clip(uri)} is not in the image store {images}")


def check_mac(mac: str) -> str:
    mac = mac.lower()
    if not MAC_RE.match(mac):
        raise invalid(f"MAC address {clip(mac)} is not of the form 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise invalid(f"MAC address {clip(mac)} is a multicast address")
    return mac


def check_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise invalid(f"IP address {clip(ip)} is not valid") from None


def check_network(net: pb.Network) -> None:
    if net.id <= 0:
        raise invalid(f"network id must be a positive number, got {net.id}")
    check_name("network", net.name)
    if net.mtu and not 576 <= net.mtu <= 9216:
        raise invalid(f"MTU must be between 576 and 9216, got {net.mtu}")
    if net.kind == pb.NETWORK_KIND_VLAN:
        if not 1 <= net.vlan_id <= 4094:
            raise invalid(f"VLAN id must be between 1 and 4094, got {net.vlan_id}")
    elif net.kind == pb.NETWORK_KIND_VXLAN:
        if not 1 <= net.vni <= 16_777_215:
            raise invalid(f"VXLAN VNI must be between 1 and 16777215, got {net.vni}")
        if bool(net.group) == bool(net.peers):
            raise invalid("a VXLAN network needs either a multicast group or a list of peers")
        if net.group:
            try:
                group = ipaddress.ip_address(net.group)
            except ValueError:
                raise invalid(f"VXLAN group {net.group!r} is not an IP address") from None
            if not group.is_multicast:
                raise invalid(f"VXLAN group {net.group} is not a multicast address")
        for peer in net.peers:
            check_ip(peer)
        if net.port > 65535:
            raise invalid(f"VXLAN port {net.port} is not a UDP port")
    elif net.kind != pb.NETWORK_KIND_FLAT:
        raise invalid("network kind must be vlan, vxlan or flat")
    if net.cidr:
        try:
            ipaddress.ip_network(net.cidr, strict=True)
        except ValueError as exc:
            raise invalid(f"address range {net.cidr!r} is not valid: {exc}") from None
