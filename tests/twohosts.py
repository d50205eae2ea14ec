"""Two real libvirt hypervisors on this one machine that live-migrate TCG guests to
each other over libvirt's TLS transport, authenticated by a site CA.

    pair = HostPair(workdir)            # or HostPair(workdir, ca=site.dir)
    dom = libvirt.open(pair.a.local_uri).createXML(xml, 0)
    dom.migrateToURI3(pair.b.uri, {}, LIVE | PEER2PEER | TLS)   # B: qemu+tls://hostb:16514/system
    ...
    pair.stop()

Layout
------
- One private network namespace (held by `pair.net`, a `sleep`), its loopback up.
  Nothing is created in, or bound to, the machine's own network.
- Per host (`pair.a` = hosta, `pair.b` = hostb, each a `Hypervisor`): a private
  mount namespace (`tests.guests.PrivateLibvirt`) joined to that network
  namespace, running its own libvirtd and virtlogd.  Bind mounts give each its
  own /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and
  /etc/libvirt; an overlayfs over /etc (upper dir `<host>/etc-upper`) gives it
  its own /etc/hosts and /etc/pki without touching the machine's /etc (which
  has no /etc/pki to bind over).
- Each host has its own loopback address (hosta 127.0.0.2, hostb 127.0.0.3);
  both hosts' /etc/hosts name both addresses, so the standard ports serve both
  daemons and the URIs read as in production.

What was needed, and why
------------------------
- `host_uuid` in each libvirtd.conf: libvirt refuses a migration whose target
  reports the source's host UUID ("the same host"), and both daemons would
  otherwise read the same one from this machine.
- Host names: libvirt's client checks the server certificate against the host
  name of the URI (and QEMU's TLS client against `migration_host`, see below),
  so each host's certificate names `hostX` (and its address) as SANs, and every
  process that connects (the source libvirtd in peer-to-peer mode, virsh, a
  node manager) resolves `hostX` through the /etc/hosts of the namespace it
  runs in.
- libvirtd.conf: `listen_tls = 1`, `listen_addr` = the host's address,
  `tls_port = 16514` (and with tcp=True `listen_tcp = 1`, `tcp_port = 16509`,
  `auth_tcp = "none"`, for comparison only), `auth_tls = "none"` (no SASL on
  top: the client certificate is the credential), and `tls_allowed_dn_list =
  ["O=<site>,OU=node,CN=*"]`: the CA check lets in only certificates of the
  site CA, the DN list only its node (host) certificates (not users, not
  services).  libvirtd runs with --listen.  The DN is GnuTLS's rendering,
  `virt-pki-query-dn cert.pem` prints it.
- TLS files (copies of the site CA and of the host's node certificate, issued
  by `tashi.runtime.certs.issue(..., key_encipherment=True)`), at libvirt's
  and QEMU's default paths inside the host's /etc:
  /etc/pki/CA/cacert.pem; /etc/pki/libvirt/servercert.pem,
  private/serverkey.pem (the daemon), clientcert.pem, private/clientkey.pem
  (libvirtd as the client of its peer in peer-to-peer migration, and any
  client process in the namespace); /etc/pki/qemu/ca-cert.pem,
  server-cert.pem, server-key.pem, client-cert.pem, client-key.pem (QEMU's
  migration stream).  The node certificate is serverAuth+clientAuth, so one
  pair serves all five roles.  keyEncipherment: libvirt 9.0 and QEMU 7.2
  refuse a certificate whose critical keyUsage lacks it ("usage does not
  permit key encipherment"), even for an EC key that never enciphers.
- qemu.conf: `migration_address` = the host's address (where its QEMU listens
  for an incoming migration, and for the NBD server of a non-shared-storage
  migration); `migration_host` = the host's name (what the source's QEMU
  connects to; without it libvirt would hand out this machine's host name,
  which resolves to 127.0.0.1 where nothing listens; with VIR_MIGRATE_TLS it
  is also the name QEMU checks the target's certificate against).  The
  default port range 49152-49215 is fine: each host listens on its own
  address.  `default_tls_x509_cert_dir = migrate_tls_x509_cert_dir =
  "/etc/pki/qemu"`, `default_tls_x509_verify = 1` (the target checks the
  source's client certificate against the CA) and, unless
  tls_data_required=False, `migrate_tls_force = 1`: a migration without
  VIR_MIGRATE_TLS is refused, so control and data are both authenticated and
  encrypted.  libvirt logs "Cannot parse socket address 'hostX'" once at start
  (it checks whether migration_host is a wildcard address): harmless.

VIR_MIGRATE_TLS works here (libvirt 9.0, QEMU 7.2): libvirt adds a
tls-creds-x509 object from /etc/pki/qemu to both QEMUs, and the NBD disk copy
of VIR_MIGRATE_NON_SHARED_* runs over it too.  The target's QEMU refuses a
source whose certificate another CA signed ("The certificate hasn't got a
known issuer", in the target's /var/log/libvirt/qemu/<name>.log; the test
shows it), but it checks only the CA: there is no DN list as libvirtd has
(any certificate of the site CA would do), and its port is open only while
an incoming migration is expected.  In the bench it costs downtime: about
0.2 s against a few tens of ms in the clear (an idle 128 MiB guest).

Non-shared storage (VIR_MIGRATE_NON_SHARED_INC): libvirt does not create the
target's image ("pre-creation of storage targets for incremental storage
migration is not supported"): the target must already hold, at the same path,
a qcow2 overlay over the same base image (the base at the same path with the
same content; `qemu-img create -f qcow2 -b BASE -F qcow2 OVERLAY`, as the
source's was made).  Only the overlay's allocated clusters are copied.  An
image over no base is accepted as well and silently loses the base's data.
Replace an overlay left by an earlier stay with a fresh one (the bench does).

Each libvirtd takes about 8 s to start here (it probes QEMU's capabilities:
the cache is found outdated, "host cpuid changed", at every start), the two
side by side.

Clients
-------
A process that talks to one of the daemons (later: a node manager) runs under
`host.enter()` (`nsenter -t <holder> --mount --net`): there `qemu:///system` is
that host's daemon (unix socket), the peer is reachable at `peer.uri`, and
/etc/pki/libvirt/clientcert.pem is the host's own node certificate, so a
client-driven (non-peer-to-peer) migration, `dom.migrate3(libvirt.open(peer.uri),
{}, LIVE | TLS)` as nm/libvirt/migration.py does, works from there too.
A process outside the namespaces reaches a daemon only through `local_uri`
(the unix socket's real path); the TLS URIs exist only inside.  Guests' files
must sit at paths both hosts see (not under the bind-mounted dirs) unless
they are meant to be per host: /var/lib/libvirt/images and /var/log/libvirt
are per host (`host.outside(path)` gives the real path of such a file).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from tashi.runtime.certs import create_ca, issue
from tests.guests import BINDS, PrivateLibvirt

TLS_PORT = 16514
TCP_PORT = 16509
HOSTS = {"hosta": "127.0.0.2", "hostb": "127.0.0.3"}
IMAGES = "/var/lib/libvirt/images"  # per host, created empty
CONSOLES = "/var/log/libvirt/qemu"  # per host, created empty (libvirt does not make it)
LOCAL_URI = "qemu:///system"  # a host's own daemon, from inside its namespaces


def site_of(ca_dir: Path) -> str:
    """The site name (the O of the CA's subject), which node certificates carry too."""
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    return str(ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)


def _install(src: Path, dst: Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(mode)


class Hypervisor:
    """One host of the pair: a private libvirtd with its own name, address, UUID and /etc."""

    def __init__(self, workdir: Path, name: str, address: str, ca: Path, net_of: int,
                 hosts: dict[str, str], *, tcp: bool, tls_data_required: bool,
                 allowed_dns: list[str]) -> None:
        self.name = name
        self.address = address
        self.workdir = workdir
        self.host_uuid = str(uuid.uuid4())
        self.tls_port = TLS_PORT
        self.tcp_port = TCP_PORT if tcp else None
        self.etc = workdir / "etc-upper"  # laid over /etc inside the namespace
        self.lvdir = workdir / "libvirt"  # PrivateLibvirt's folder: run, lib, log, ...
        machine_hosts = Path("/etc/hosts")
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "hosts").write_text(
            (machine_hosts.read_text() if machine_hosts.exists() else "")
            + "".join(f"{a} {n}\n" for n, a in hosts.items()))
        self.cert, self.key = issue(ca, "node", name, hosts=[name, address],
                                    out=workdir / "certs", key_encipherment=True)
        pki = self.etc / "pki"
        for dst, src, mode in [
            ("CA/cacert.pem", ca / "ca.pem", 0o644),
            ("libvirt/servercert.pem", self.cert, 0o644),
            ("libvirt/private/serverkey.pem", self.key, 0o600),
            ("libvirt/clientcert.pem", self.cert, 0o644),
            ("libvirt/private/clientkey.pem", self.key, 0o600),
            ("qemu/ca-cert.pem", ca / "ca.pem", 0o644),
            ("qemu/server-cert.pem", self.cert, 0o644),
            ("qemu/server-key.pem", self.key, 0o600),
            ("qemu/client-cert.pem", self.cert, 0o644),
            ("qemu/client-key.pem", self.key, 0o600),
        ]:
            _install(src, pki / dst, mode)
        dn_list = ", ".join(f'"{dn}"' for dn in allowed_dns)
        libvirtd_conf = (f'host_uuid = "{self.host_uuid}"\n'
                         f'listen_addr = "{address}"\n'
                         f'listen_tls = 1\ntls_port = "{TLS_PORT}"\nauth_tls = "none"\n'
                         f'tls_allowed_dn_list = [{dn_list}]\n')
        if tcp:
            libvirtd_conf += f'listen_tcp = 1\ntcp_port = "{TCP_PORT}"\nauth_tcp = "none"\n'
        else:
            libvirtd_conf += "listen_tcp = 0\n"
        qemu_conf = (f'migration_address = "{address}"\n'
                     f'migration_host = "{name}"\n'
                     'default_tls_x509_cert_dir = "/etc/pki/qemu"\n'
                     'default_tls_x509_verify = 1\n'
                     'migrate_tls_x509_cert_dir = "/etc/pki/qemu"\n'
                     f'migrate_tls_force = {1 if tls_data_required else 0}\n')
        for inside in (IMAGES, CONSOLES):
            self.outside(inside).mkdir(parents=True, exist_ok=True)
        self.lv = PrivateLibvirt(self.lvdir, net_of=net_of, etc_overlay=self.etc,
                                 libvirtd_conf=libvirtd_conf, qemu_conf=qemu_conf, listen=True)

    @property
    def uri(self) -> str:
        """How the other host (or a client in the namespaces) reaches this one: TLS."""
        return f"qemu+tls://{self.name}:{self.tls_port}/system"

    @property
    def tcp_uri(self) -> str:
        if self.tcp_port is None:
            raise ValueError("this pair was made without TCP (tcp=True)")
        return f"qemu+tcp://{self.name}:{self.tcp_port}/system"

    @property
    def local_uri(self) -> str:
        """This daemon from outside the namespaces: its unix socket by its real path."""
        return f"{LOCAL_URI}?socket={self.lvdir / 'run' / 'libvirt-sock'}"

    def outside(self, inside: str) -> Path:
        """The real path of a file this host sees at `inside` (bind mounts and /etc)."""
        for src, dst in BINDS.items():
            if inside == dst or inside.startswith(dst + "/"):
                return self.lvdir / src / inside[len(dst):].lstrip("/")
        if inside.startswith("/etc/") and (self.etc / inside[len("/etc/"):]).exists():
            return self.etc / inside[len("/etc/"):]
        return Path(inside)

    def enter(self) -> list[str]:
        """argv prefix: run a command in this host's mount and network namespaces."""
        return self.lv.enter(net=True)

    def run(self, *argv: str) -> str:
        """Run a command beside this host's libvirtd; its stdout (RuntimeError if it fails)."""
        proc = subprocess.run(self.enter() + list(argv), capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on {self.name} failed: {proc.stderr.strip()}")
        return proc.stdout

    def virsh(self, *args: str) -> str:
        return self.lv.virsh(*args)

    def guest_pids(self) -> list[int]:
        return self.lv.guest_pids()

    def stop(self) -> None:
        self.lv.stop()


class HostPair:
    """Two `Hypervisor`s, `a` (hosta) and `b` (hostb), in one private network namespace.

    `ca`: the directory of an existing site CA (ca.pem, ca.key: e.g. a
    tests.harness.Site's dir) whose key signs the hosts' certificates; by
    default a new one in workdir/ca.  `tcp`: also plain, unauthenticated TCP
    (for comparison; loopback of the private namespace only).
    `tls_data_required=False` lets migrations go without VIR_MIGRATE_TLS.
    """

    def __init__(self, workdir: Path, ca: Path | None = None, *, tcp: bool = False,
                 tls_data_required: bool = True) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        if ca is None:
            ca = workdir / "ca"
            create_ca(ca)
        self.ca = ca
        self.site = site_of(ca)
        self.allowed_dns = [f"O={self.site},OU=node,CN=*"]
        self.hosts: list[Hypervisor] = []
        self._log = open(workdir / "netns.log", "ab")
        self.net = subprocess.Popen(
            ["unshare", "--net", "sh", "-c",
             "ip link set lo up && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE, stderr=self._log)
        try:
            assert self.net.stdout is not None
            if self.net.stdout.readline().strip() != b"ready":
                raise RuntimeError("could not make the network namespace: "
                                   + (workdir / "netns.log").read_text())
            # Side by side: each libvirtd probes QEMU's capabilities for seconds at start.
            with ThreadPoolExecutor(len(HOSTS)) as pool:
                futures = [pool.submit(Hypervisor, workdir / name, name, address, ca,
                                       self.net.pid, HOSTS, tcp=tcp,
                                       tls_data_required=tls_data_required,
                                       allowed_dns=self.allowed_dns)
                           for name, address in HOSTS.items()]
                wait(futures)
            self.hosts = [f.result() for f in futures if f.exception() is None]
            errors = [e for f in futures if (e := f.exception()) is not None]
            if errors:
                raise errors[0]
        except BaseException:
            self.stop()
            raise
        self.a, self.b = self.hosts

    @property
    def netns(self) -> str:
        """The shared network namespace, as a path for nsenter --net= or setns."""
        return f"/proc/{self.net.pid}/ns/net"

    def stop(self) -> None:
        """Kill the guests, the daemons and the namespaces' holders (idempotent)."""
        for host in self.hosts:
            host.stop()
        if self.net.poll() is None:
            self.net.kill()
        self.net.wait(5)
        if self.net.stdout is not None:
            self.net.stdout.close()
        self._log.close()

    def __enter__(self) -> HostPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def guest_xml(name: str, kernel: Path, initrd: Path, cmdline: str, memory_mib: int = 128,
              disk: str = "") -> str:
    """A TCG domain (type qemu: KVM guests hang here) booting `kernel`, its serial console
    appended to CONSOLES/<name>-console.log on whichever host runs it; `disk`: a qcow2
    image's path (as the hosts see it) as vda."""
    disk_xml = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
                if disk else "")
    log = f"{CONSOLES}/{name}-console.log"
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type><kernel>{kernel}</kernel><initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    {disk_xml}
    <serial type='file'><source path='{log}' append='on'/><target port='0'/></serial>
    <console type='file'><source path='{log}' append='on'/><target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>"""


def console_log(host: Hypervisor, name: str) -> str:
    """What the guest `name` wrote to its serial console while on `host` (maybe nothing)."""
    path = host.outside(f"{CONSOLES}/{name}-console.log")
    return path.read_text(errors="replace") if path.exists() else ""
