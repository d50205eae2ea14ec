"""Live migration between two real libvirtd daemons (tests/twohosts.py) over libvirt's
TLS transport, with QEMU's migration stream over TLS too (VIR_MIGRATE_TLS), both
authenticated by the site CA.

- A counting TCG guest goes A -> B -> A (live, peer to peer): the same boot
  ticks on (one TASHI-GUEST-UP, tick numbers rising on each side's console log).
- A guest on a qcow2 overlay local to A goes to B with VIR_MIGRATE_NON_SHARED_INC
  over an overlay precreated on B: what A wrote into its overlay, what the
  guest wrote while migrating and the base image's content are all on B.
- Clients whose certificate is not a node certificate of the site CA (another
  CA's, none, a site user's) are refused by the daemon; so is a QEMU migration
  stream from a source presenting another CA's certificate.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tashi.runtime.certs import create_ca, issue
from tests.guests import CMDLINE, GUEST_UP, guest_files
from tests.harness import Site, wait_for
from tests.twohosts import IMAGES, HostPair, Hypervisor, console_log, guest_xml

pytestmark = [pytest.mark.system, pytest.mark.slow]

NEEDED = ("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "qemu-img", "unshare",
          "nsenter")
LIVE_TLS = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_TLS
BOOT_TIMEOUT = 60


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostPair]:
    if os.geteuid() != 0:
        pytest.skip("private libvirtds need root (unshare, mount)")
    missing = [b for b in NEEDED if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    work = tmp_path_factory.mktemp("twohosts")
    site = Site(work / "site")  # the CA a CM and NMs of the same test would use
    p = HostPair(work / "pair", ca=site.dir)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def conns(pair: HostPair) -> Iterator[tuple[libvirt.virConnect, libvirt.virConnect]]:
    """The test's own connections to A and B (their unix sockets, from outside)."""
    a, b = libvirt.open(pair.a.local_uri), libvirt.open(pair.b.local_uri)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+)$", text, re.M)]


def last_tick(host: Hypervisor, name: str) -> int:
    return (ticks(console_log(host, name)) or [0])[-1]


def destroy_everywhere(name: str, *conns: libvirt.virConnect) -> None:
    for conn in conns:
        try:
            conn.lookupByName(name).destroy()
        except libvirt.libvirtError:
            pass


def test_live_migration_there_and_back_keeps_the_same_boot(
        pair: HostPair, conns: tuple[libvirt.virConnect, libvirt.virConnect],
        tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    conn_a, conn_b = conns
    kernel, initrd = guest_files(tmp_path)  # outside the bind mounts: both hosts see them
    name = "roamer"
    dom = conn_a.createXML(guest_xml(name, kernel, initrd, CMDLINE), 0)
    try:
        wait_for(lambda: last_tick(a, name) >= 2, timeout=BOOT_TIMEOUT, what="boot on A")
        on_a = a.guest_pids()
        assert len(on_a) == 1 and b.guest_pids() == []

        # migrate_tls_force: QEMU's stream must be TLS as well
        with pytest.raises(libvirt.libvirtError, match="VIR_MIGRATE_TLS"):
            dom.migrateToURI3(b.uri, {}, LIVE_TLS & ~libvirt.VIR_MIGRATE_TLS)

        dom.migrateToURI3(b.uri, {}, LIVE_TLS)
        assert a.guest_pids() == [] and len(b.guest_pids()) == 1
        with pytest.raises(libvirt.libvirtError):
            conn_a.lookupByName(name)
        dom_b = conn_b.lookupByName(name)
        assert dom_b.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        stats = dom_b.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        assert stats["memory_total"] >= 128 << 20 and 0 < stats["downtime"] < 5000
        left_a = last_tick(a, name)
        wait_for(lambda: last_tick(b, name) >= left_a + 2, timeout=10, what="ticks on B")

        dom_b.migrateToURI3(a.uri, {}, LIVE_TLS)
        assert b.guest_pids() == [] and len(a.guest_pids()) == 1
        left_b = last_tick(b, name)
        wait_for(lambda: last_tick(a, name) >= left_b + 2, timeout=10, what="ticks on A again")
    finally:
        destroy_everywhere(name, conn_a, conn_b)

    log_a, log_b = console_log(a, name), console_log(b, name)
    assert log_a.count(GUEST_UP) == 1 and GUEST_UP not in log_b, "one boot, never again"
    seen_a, seen_b = ticks(log_a), ticks(log_b)
    first_stay = [t for t in seen_a if t <= left_a]
    second_stay = seen_a[len(first_stay):]
    # each side's ticks rise; B's carry on from A's, A's again from B's (a line cut at
    # the switch-over may be lost, nothing is repeated)
    for stay in (first_stay, seen_b, second_stay):
        assert stay == sorted(set(stay)) and stay[-1] - stay[0] <= len(stay)
    assert left_a < seen_b[0] <= left_a + 2
    assert left_b < second_stay[0] <= left_b + 2


def qemu_img(host: Hypervisor, *args: str) -> None:
    host.run("qemu-img", *args)


def test_non_shared_storage_goes_with_the_guest(
        pair: HostPair, conns: tuple[libvirt.virConnect, libvirt.virConnect],
        tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    conn_a, conn_b = conns
    kernel, initrd = guest_files(tmp_path, disk_ticks=True)
    name = "mover"
    base, overlay = f"{IMAGES}/{name}-base.qcow2", f"{IMAGES}/{name}.qcow2"
    # The same base on both hosts (as an image store's copy would be); the overlay,
    # with data of its own at 1 MiB, on A only.
    qemu_img(a, "create", "-q", "-f", "qcow2", base, "16M")
    a.run("qemu-io", "-c", "write -q -P 0x5a 2M 1M", base)
    shutil.copyfile(a.outside(base), b.outside(base))
    qemu_img(a, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
    a.run("qemu-io", "-c", "write -q -P 0xa5 1M 1M", overlay)
    dom = conn_a.createXML(guest_xml(name, kernel, initrd, CMDLINE, disk=overlay), 0)
    try:
        wait_for(lambda: last_tick(a, name) >= 2, timeout=BOOT_TIMEOUT, what="boot on A")
        flags = LIVE_TLS | libvirt.VIR_MIGRATE_NON_SHARED_INC

        # libvirt makes no image for an incremental copy: B must have it
        with pytest.raises(libvirt.libvirtError, match="pre-creation of storage targets"):
            dom.migrateToURI3(b.uri, {}, flags)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING and b.guest_pids() == []

        qemu_img(b, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay)
        dom.migrateToURI3(b.uri, {}, flags)
        dom_b = conn_b.lookupByName(name)
        left_a = last_tick(a, name)
        wait_for(lambda: last_tick(b, name) >= left_a + 2, timeout=10, what="ticks on B")
        dom_b.destroy()
        last = last_tick(b, name)
    finally:
        destroy_everywhere(name, conn_a, conn_b)

    assert GUEST_UP not in console_log(b, name)
    raw = f"{IMAGES}/{name}.raw"
    b.run("qemu-img", "convert", "-O", "raw", overlay, raw)
    disk = b.outside(raw).read_bytes()
    written = int(re.fullmatch(rb"tick (\d+)\n\0*", disk[:512]).group(1))  # type: ignore[union-attr]
    assert written in (last - 1, last), "the guest's last writes, on B's overlay"
    assert disk[1 << 20:2 << 20] == b"\xa5" * (1 << 20), "A's overlay data was copied"
    assert disk[2 << 20:3 << 20] == b"\x5a" * (1 << 20), "the base shows through on B"


def tls_client(host: Hypervisor, pkidir: Path,
               target: Hypervisor) -> subprocess.CompletedProcess[str]:
    """virsh beside `host`, to `target` over TLS with the credentials in `pkidir`."""
    return subprocess.run(host.enter() + ["virsh", "-c", f"{target.uri}?pkipath={pkidir}",
                                          "hostname"],
                          capture_output=True, text=True, timeout=60)


def pki(directory: Path, cas: list[Path], cert: Path | None = None,
        key: Path | None = None) -> Path:
    """A client's pkipath: the CAs it trusts (it checks its own certificate too)."""
    directory.mkdir()
    (directory / "cacert.pem").write_bytes(b"".join(ca.read_bytes() for ca in cas))
    if cert is not None and key is not None:
        shutil.copyfile(cert, directory / "clientcert.pem")
        shutil.copyfile(key, directory / "clientkey.pem")
    return directory


def test_only_node_certificates_of_the_site_get_in(
        pair: HostPair, conns: tuple[libvirt.virConnect, libvirt.virConnect],
        tmp_path: Path) -> None:
    a, b = pair.a, pair.b
    site_ca = pair.ca / "ca.pem"
    other = tmp_path / "other-ca"
    create_ca(other, site=pair.site)  # same site name, same subjects: only the signer differs
    forged = issue(other, "node", "hosta", hosts=["hosta"], out=tmp_path / "forged",
                   key_encipherment=True)
    user = issue(pair.ca, "user", "alice", out=tmp_path / "user", key_encipherment=True)
    both = [site_ca, other / "ca.pem"]  # the client gets as far as the handshake

    ok = tls_client(a, pki(tmp_path / "own", [site_ca], a.cert, a.key), b)
    assert ok.returncode == 0 and ok.stdout.strip(), ok.stderr
    daemon_log = b.lvdir / "libvirtd.log"
    for label, creds, why in [
            ("another CA", pki(tmp_path / "forged-pki", both, *forged),
             "hasn't got a known issuer"),
            ("no certificate", pki(tmp_path / "none", both), "No certificate was found"),
            ("a site user", pki(tmp_path / "user-pki", [site_ca], *user),
             "Distinguished Name is not on the list of allowed clients")]:
        seen = daemon_log.stat().st_size
        refused = tls_client(a, creds, b)
        assert refused.returncode != 0, f"{label} got in"
        with daemon_log.open(errors="replace") as f:
            f.seek(seen)
            assert why in f.read(), f"the daemon refused {label}"

    # QEMU's migration stream: a source presenting another CA's certificate (and
    # trusting both CAs, so that it gets as far as the handshake) is refused by B
    conn_a, conn_b = conns
    kernel, initrd = guest_files(tmp_path)
    name = "intruder"
    qemu_pki = a.etc / "pki" / "qemu"
    saved = {n: (qemu_pki / n).read_bytes() for n in ("ca-cert.pem", "client-cert.pem",
                                                      "client-key.pem")}
    dom = conn_a.createXML(guest_xml(name, kernel, initrd, CMDLINE), 0)
    try:
        (qemu_pki / "ca-cert.pem").write_bytes(site_ca.read_bytes()
                                               + (other / "ca.pem").read_bytes())
        shutil.copyfile(forged[0], qemu_pki / "client-cert.pem")
        shutil.copyfile(forged[1], qemu_pki / "client-key.pem")
        with pytest.raises(libvirt.libvirtError, match="TLS"):
            dom.migrateToURI3(b.uri, {}, LIVE_TLS)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING and b.guest_pids() == []
        assert "hasn't got a known issuer" in b.outside(
            f"/var/log/libvirt/qemu/{name}.log").read_text()
    finally:
        for n, data in saved.items():
            (qemu_pki / n).write_bytes(data)
        destroy_everywhere(name, conn_a, conn_b)
