"""Network namespaces for host-networking tests: created by the test, deleted after;
and dnsmasq and a DHCP client to run inside them.

Nothing here touches the machine's own interfaces: every link is created
inside a namespace (`ip -n NS ...`), and a veth underlay is created in one
test namespace with its peer sent straight to the other.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_counter = itertools.count()


@dataclass(frozen=True)
class Namespace:
    name: str

    def run(self, *cmd: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "-n", self.name, *args], capture_output=True, text=True,
                              check=check, timeout=30)

    def links(self) -> dict[str, dict[str, Any]]:
        out = self.ip("-d", "-j", "link", "show").stdout
        return {link["ifname"]: link for link in json.loads(out)}

    def addrs(self, ifname: str) -> list[str]:
        out = self.ip("-j", "addr", "show", "dev", ifname).stdout
        return sorted(f"{a['local']}/{a['prefixlen']}" for i in json.loads(out)
                      for a in i["addr_info"])

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def ping(self, address: str, *, size: int = 56, dont_fragment: bool = False,
             count: int = 1, wait: float = 2) -> bool:
        args = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), "-s", str(size)]
        if dont_fragment:
            args += ["-M", "do"]
        return self.run(*args, address, check=False).returncode == 0

    def ping_soon(self, address: str, *, within: float = 8, **kw: Any) -> bool:
        """True once a ping gets through (learning and ARP may cost the first ones)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.ping(address, **kw):
                return True
        return False


@contextmanager
def namespace(role: str) -> Iterator[Namespace]:
    name = f"tashi-t{os.getpid()}-{next(_counter)}-{role}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    ns = Namespace(name)
    try:
        ns.ip("link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextmanager
def two_hosts(uplink: str = "up0",
              subnet: str = "192.0.2") -> Iterator[tuple[Namespace, Namespace]]:
    """Two "hosts" joined by a veth underlay `uplink` with addresses SUBNET.1 and SUBNET.2."""
    with ExitStack() as stack:
        a = stack.enter_context(namespace("a"))
        b = stack.enter_context(namespace("b"))
        a.ip("link", "add", uplink, "type", "veth", "peer", "name", uplink, "netns", b.name)
        for i, ns in enumerate((a, b), start=1):
            ns.ip("addr", "add", f"{subnet}.{i}/24", "dev", uplink)
            ns.ip("link", "set", uplink, "up")
            # Answer ARP only for addresses on the asking interface, so a
            # frame leaking into the wrong network cannot be answered.
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")
        yield a, b


def kernel_has_8021q() -> bool:
    """Probe 802.1Q the only sure way: make a VLAN link in a scratch namespace."""
    with namespace("probe") as ns:
        ns.ip("link", "add", "d0", "type", "veth", "peer", "name", "d1")
        return ns.ip("link", "add", "link", "d0", "name", "d0.5", "type", "vlan", "id", "5",
                     check=False).returncode == 0


def start_dnsmasq(host: Namespace, tmp_path: Path, bridge: str,
                  first: str, last: str) -> subprocess.Popen[bytes]:
    """dnsmasq serving DHCP on `bridge` inside the host namespace (DNS off); log in tmp_path."""
    with open(tmp_path / "dnsmasq.log", "wb") as log:
        return subprocess.Popen(
            ["ip", "netns", "exec", host.name, "dnsmasq", "--keep-in-foreground",
             "--conf-file=/dev/null", "--user=root", f"--interface={bridge}",
             "--bind-interfaces", "--port=0", "--no-ping", f"--dhcp-range={first},{last},1h",
             f"--dhcp-leasefile={tmp_path / 'leases'}",
             f"--pid-file={tmp_path / 'dnsmasq.pid'}"],
            stdout=subprocess.DEVNULL, stderr=log)


def dhcp_client(guest: Namespace) -> subprocess.CompletedProcess[str]:
    """busybox udhcpc on the namespace's eth0: one lease, then exit (status 0 if leased)."""
    return guest.run("busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "10", "-T", "1",
                     "-s", "/bin/true", check=False, timeout=30)
