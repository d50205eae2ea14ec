"""DHCP address discovery: the ACK parser, and snooping real dnsmasq leases in a namespace."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tashi.nm.network import HostNetworking, Kind, NetworkSpec
from tashi.nm.network.dhcp import DhcpSnooper, Lease, parse_ack
from tests.netns import Namespace, dhcp_client, namespace, start_dnsmasq

MAC = "56:00:00:00:07:00"


def dhcp_frame(msg_type: int, yiaddr: str = "10.70.0.12", *, op: int = 2,
               lease: int = 3600, sport: int = 67) -> bytes:
    chaddr = bytes.fromhex(MAC.replace(":", ""))
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, 6, 0, 0x1234, 0, 0,
                        b"\0" * 4, socket.inet_aton(yiaddr), b"\0" * 4, b"\0" * 4,
                        chaddr, b"", b"")
    options = (b"\x63\x82\x53\x63" + bytes([53, 1, msg_type]) + b"\x00"
               + bytes([51, 4]) + struct.pack("!I", lease) + b"\xff")
    payload = bootp + options
    udp = struct.pack("!HHHH", sport, 68, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton("10.70.0.1"), socket.inet_aton(yiaddr)) + udp
    return chaddr + b"\x02" * 6 + b"\x08\x00" + ip


def test_ack_gives_the_lease() -> None:
    assert parse_ack(dhcp_frame(5)) == Lease(mac=MAC, ip="10.70.0.12", seconds=3600)


@pytest.mark.parametrize("frame", [
    dhcp_frame(2),                      # OFFER: not yet the client's
    dhcp_frame(6),                      # NAK
    dhcp_frame(5, op=1),                # a request, not a reply
    dhcp_frame(5, yiaddr="0.0.0.0"),    # ACK to INFORM: no address
    dhcp_frame(5)[:200],                # truncated
    b"\x00" * 12 + b"\x86\xdd" + b"\x00" * 300,   # IPv6
])
def test_everything_else_is_ignored(frame: bytes) -> None:
    assert parse_ack(frame) is None


@pytest.fixture()
def lan() -> Iterator[tuple[Namespace, Namespace, HostNetworking]]:
    """A host namespace with network 1's bridge, and a "guest" namespace whose NIC
    (MAC `MAC`) is plugged into the bridge the way a VM's tap is."""
    with namespace("h") as host, namespace("g") as guest:
        host.ip("link", "add", "up0", "type", "veth", "peer", "name", "wire0")
        host.ip("link", "set", "up0", "up")
        net = HostNetworking("up0", host.name)
        spec = NetworkSpec(1, "one", Kind.VXLAN, vni=5, peers=("192.0.2.9",))
        assert net.converge([spec]).status(1).ready
        host.ip("addr", "add", "10.70.0.1/24", "dev", "tbr1")
        host.ip("link", "add", "tt7n0", "type", "veth", "peer", "name", "eth0",
                "netns", guest.name)
        net.attach_tap("tt7n0", "tbr1", 1500)
        guest.ip("link", "set", "eth0", "address", MAC, "up")
        yield host, guest, net


@pytest.mark.system
def test_snooper_sees_the_lease_dnsmasq_grants(lan: tuple[Namespace, Namespace, HostNetworking],
                                               tmp_path: Path) -> None:
    host, guest, _ = lan
    leases: list[Lease] = []
    snooper = DhcpSnooper(leases.append, host.name)
    snooper.start()
    dnsmasq = start_dnsmasq(host, tmp_path, "tbr1", "10.70.0.50", "10.70.0.60")
    try:
        result = dhcp_client(guest)
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + 3
        while not leases and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dnsmasq.terminate()
        dnsmasq.wait(10)
        snooper.stop()
    assert leases, "no DHCPACK seen"
    assert {(lease.mac, lease.seconds) for lease in leases} == {(MAC, 3600)}
    (ip,) = {lease.ip for lease in leases}
    assert ip.startswith("10.70.0.") and 50 <= int(ip.rsplit(".", 1)[1]) <= 60
    # The same address dnsmasq wrote down: <expiry> <mac> <ip> <name> <client id>
    assert (tmp_path / "leases").read_text().split()[1:3] == [MAC, ip]
