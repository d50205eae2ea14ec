"""Learn VM addresses by watching DHCP acknowledgements cross this host.

Every DHCPACK a server sends to a VM passes through the VM's tap on this
host, whoever the server is (dnsmasq on the bridge, a server across the
VXLAN, a router on the VLAN), so a packet socket sees it without any
configuration and without the guest's help.  (libvirt's ARP address source
does not work on these hosts, and a lease file exists only where the server
runs.)  A classic BPF filter keeps everything but server-to-client DHCP in
the kernel.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
ETH_HLEN = 14
CLONE_NEWNET = 0x40000000
SO_ATTACH_FILTER = 26
DHCP_MAGIC = b"\x63\x82\x53\x63"
BOOTP_FIXED = 236
DHCPACK = 5
OPT_MESSAGE_TYPE = 53
OPT_LEASE_TIME = 51
OPT_PAD, OPT_END = 0, 255

# IPv4, UDP, not a fragment, source port 67 (server), destination port 68
# (client), on an Ethernet frame: tcpdump -dd 'udp src port 67 and dst port 68'.
_DROP = 12
FILTER: list[tuple[int, int, int, int]] = [
    (0x28, 0, 0, 12),                # ldh [12]            ethertype
    (0x15, 0, _DROP - 2, 0x0800),    # jeq IPv4
    (0x30, 0, 0, 23),                # ldb [23]            protocol
    (0x15, 0, _DROP - 4, 17),        # jeq UDP
    (0x28, 0, 0, 20),                # ldh [20]            fragment offset
    (0x45, _DROP - 6, 0, 0x1FFF),    # jset -> drop
    (0xB1, 0, 0, 14),                # ldxb 4*([14]&0xf)   IP header length
    (0x48, 0, 0, 14),                # ldh [x+14]          source port
    (0x15, 0, _DROP - 9, 67),
    (0x48, 0, 0, 16),                # ldh [x+16]          destination port
    (0x15, 0, _DROP - 11, 68),
    (0x06, 0, 0, 0x40000),           # accept
    (0x06, 0, 0, 0),                 # drop
]


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    seconds: int = 0
    """Lease time the server granted; 0 when it did not say."""


def parse_ack(frame: bytes) -> Lease | None:
    """The lease in an Ethernet frame carrying a DHCPACK, or None for anything else."""
    if len(frame) < ETH_HLEN + 20 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[ETH_HLEN] & 0x0F) * 4
    if frame[ETH_HLEN + 9] != 17 or ihl < 20:
        return None
    bootp = frame[ETH_HLEN + ihl + 8:]
    if len(bootp) < BOOTP_FIXED + 4 or bootp[BOOTP_FIXED:BOOTP_FIXED + 4] != DHCP_MAGIC:
        return None
    op, htype, hlen = bootp[0], bootp[1], bootp[2]
    if op != 2 or htype != 1 or hlen != 6:
        return None
    options = _options(bootp[BOOTP_FIXED + 4:])
    if options.get(OPT_MESSAGE_TYPE) != bytes([DHCPACK]):
        return None
    yiaddr = ipaddress.IPv4Address(bootp[16:20])
    if yiaddr.is_unspecified:  # an ACK to DHCPINFORM carries no address
        return None
    mac = ":".join(f"{b:02x}" for b in bootp[28:34])
    lease_time = options.get(OPT_LEASE_TIME, b"")
    seconds = struct.unpack("!I", lease_time)[0] if len(lease_time) == 4 else 0
    return Lease(mac=mac, ip=str(yiaddr), seconds=seconds)


def _options(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        length = data[i + 1]
        out.setdefault(code, data[i + 2:i + 2 + length])
        i += 2 + length
    return out


def _attach_filter(sock: socket.socket) -> None:
    raw = b"".join(struct.pack("HBBI", *ins) for ins in FILTER)
    buf = ctypes.create_string_buffer(raw)
    prog = struct.pack("HL", len(FILTER), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def _new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        _attach_filter(sock)
    except OSError:
        sock.close()
        raise
    return sock


def packet_socket(netns: str | None) -> socket.socket:
    """A filtered packet socket on every interface of `netns` (or of our own namespace).

    `netns` is a name under /run/netns or a path such as /proc/PID/ns/net.

    A socket belongs to the namespace it was created in, so a short-lived
    thread enters the namespace (setns affects only the calling thread),
    creates it, and ends; this process's other threads never move.
    """
    if netns is None:
        return _new_socket()
    out: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(os.path.join("/run/netns", netns), os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            out.append(_new_socket())
        except BaseException as exc:  # handed to the caller's thread
            out.append(exc)

    t = threading.Thread(target=make, name="nm-netns-socket")
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


class DhcpSnooper:
    """Calls `on_lease` for each DHCPACK seen in a namespace, from its own thread."""

    def __init__(self, on_lease: Callable[[Lease], None], netns: str | None = None) -> None:
        self.on_lease = on_lease
        self.sock = packet_socket(netns)
        self.sock.settimeout(0.5)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nm-dhcp-snoop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stopping.is_set():
                    log.warning("DHCP snooping stopped: %s", exc)
                return
            lease = parse_ack(frame)
            if lease is None:
                continue
            try:
                self.on_lease(lease)
            except Exception:
                log.exception("handling DHCP lease %s", lease)
