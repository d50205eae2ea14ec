"""What the tests start and wait for: every service as a real process on
loopback (or the CM in-process), stopping them, and the one polling `wait_for`.

- Processes: `Process` (any service; its address from the 'listening on' line),
  `CMProcess`/`start_cm`/`start_cm_at`, `NMProcess` on libvirt's test driver
  (`node_xml`), `SchedulerProcess`, `start_accounting`; `stop_all` stops them.
- In process: `InProcCM`/`inproc_cm` (a real gRPC server, no child process)
  and `running_agent` (a scheduler agent on a thread).
- Speaking for a host or a user: `register_host`, `activate`, `vm`.
- Waits: `wait_for` (every wait is built on it or shares its rule: poll,
  return the truthy value, fail with AssertionError), `up_host`, `state`,
  `wait_state`, `states`, `wait_states`.

Two launchers live apart: tests/guests.py (a private libvirtd and a tiny real
Linux guest, big and libvirt-specific) and tests/netns.py (network namespaces
and dnsmasq for the host-networking tests).  Helpers for one service's tests
only are beside them: tests/scheduler/support.py, tests/accounting/support.py.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc

from tashi.cm.config import CMConfig
from tashi.cm.main import ClusterManager
from tashi.cm.store import Store, open_store
from tashi.runtime.certs import create_ca, issue
from tashi.runtime.client import ClusterClient, TashiError, channel
from tashi.runtime.names import instance_state_name
from tashi.runtime.tls import Tls
from tashi.scheduler.agent import Agent
from tashi.scheduler.config import SchedulerConfig
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import placement_pb2 as pl
from tashi.v1 import resources_pb2 as pb

LISTEN_RE = re.compile(r"listening on (\S+:\d+)")
CONNECTED_RE = re.compile(r"connected to (\S+:\d+)")


# -- processes ------------------------------------------------------------------------


class Process:
    """A service started as a child process; `address` from its 'listening on' line."""

    def __init__(self, argv: Sequence[str], log_path: Path, ready: re.Pattern[str] = LISTEN_RE,
                 timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self._log,
                                     env={**os.environ, **(env or {})})
        self.address = ""
        self.lines: list[str] = []
        found = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                if not self._log.closed:
                    self._log.write(raw)
                    self._log.flush()
                m = ready.search(line)
                if m and not found.is_set():
                    self.address = m.group(1) if m.groups() else ""
                    found.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, then close the pipes."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self._pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self._log.closed:
            self._log.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after `timeout`), then close the pipes."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()


def stop_all(*procs: Process | None, kill: bool = False) -> None:
    """Stop the processes a test started (SIGKILL them first with `kill`), in the
    order given; None is skipped.  Stopping closes each one's pipes and log."""
    for p in procs:
        if p is None:
            continue
        if kill:
            p.kill()
        p.stop()


def free_port() -> int:
    """A loopback port free right now (for services that must come back on the same port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bin_path(name: str) -> str:
    """Console scripts live beside the interpreter running the tests."""
    return str(Path(sys.executable).parent / name)


# -- the cluster manager --------------------------------------------------------------


class Site:
    """A site CA in a test's scratch directory (`tashi certs`), and the certificate
    of each party, issued on first use: give it to the launchers below and every
    service and client speaks mutual TLS."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        create_ca(directory)

    def files(self, kind: str, name: str) -> tuple[Path, Path, Path]:
        cert = self.dir / f"{kind}s" / f"{name}.pem"
        key = cert.with_suffix(".key")
        if not cert.exists():
            issue(self.dir, kind, name)
        return self.dir / "ca.pem", cert, key

    def flags(self, kind: str, name: str) -> list[str]:
        ca, cert, key = self.files(kind, name)
        return ["--tls-ca", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)]

    def tls(self, kind: str, name: str) -> Tls:
        return Tls.load(*self.files(kind, name))


def site_flags(site: Site | None, kind: str, name: str) -> list[str]:
    return site.flags(kind, name) if site is not None else []


# The store the CMs of a test use: "sqlite" (the default) or "postgresql" (the
# tests in tests/cm run on both: tests/cm/conftest.py).
STORE = {"kind": "sqlite"}


def db_url(tmp_path: Path) -> str:
    """The store of the CM of the test in `tmp_path`: a SQLite file, or a database of
    the session's private PostgreSQL named after the test (the same on a restart)."""
    if STORE["kind"] == "postgresql":
        from tests import pg
        return pg.server().database(str(tmp_path))
    return str(tmp_path / "cm.db")


def open_test_store(tmp_path: Path) -> Store:
    """The store a test's own Cluster writes to, leading it (a shared store writes
    only under the lease)."""
    store = open_store(db_url(tmp_path))
    assert store.try_lead("test")
    return store


class CMProcess(Process):
    """`tashi-cm` on `listen` (a free port by default); keywords become flags
    (`expire_host_seconds=2` -> `--expire-host-seconds 2`, booleans `--x`/`--no-x`);
    with a `site`, mutual TLS with the certificate of the service tashi-cm."""

    def __init__(self, tmp_path: Path, db: Path | str | None = None, listen: str = "127.0.0.1:0",
                 site: Site | None = None, ready: re.Pattern[str] = LISTEN_RE,
                 log_name: str = "cm.log", **flags: object) -> None:
        self.db = db or db_url(tmp_path)
        self.flags = flags
        self.site = site
        argv = [bin_path("tashi-cm"), "--listen", listen, "--db", str(self.db),
                *site_flags(site, "service", "tashi-cm")]
        for key, value in flags.items():
            if isinstance(value, bool):
                argv.append(("--" if value else "--no-") + key.replace("_", "-"))
            else:
                argv += ["--" + key.replace("_", "-"), str(value)]
        super().__init__(argv, tmp_path / log_name, ready=ready)

    def client(self, user: str = "root") -> ClusterClient:
        """A client as `user` (with a site: holding that user's certificate)."""
        tls = self.site.tls("user", user) if self.site is not None else None
        return ClusterClient(self.address, user=user, tls=tls)


def start_cm(tmp_path: Path, **flags: object) -> CMProcess:
    return CMProcess(tmp_path, **flags)


def start_cm_at(tmp_path: Path, port: int, **flags: object) -> CMProcess:
    """`tashi-cm` on a fixed port (so a restarted CM comes back where it was)."""
    return CMProcess(tmp_path, listen=f"127.0.0.1:{port}", **flags)


def image_store(images: Path) -> Path:
    """An image store with a real 16 MiB qcow2 base.qcow2 and a raw sub/data.img."""
    (images / "sub").mkdir(parents=True, exist_ok=True)
    if not (images / "base.qcow2").exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "base.qcow2"),
                        "16M"], check=True)
    (images / "sub" / "data.img").write_bytes(b"\0" * 1024)
    return images


class InProcCM:
    """An in-process cluster manager on a loopback port, for fast RPC tests."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        settings.setdefault("images", str(image_store(tmp_path / "images")))
        settings.setdefault("db", db_url(tmp_path))
        self.cfg = CMConfig(listen="127.0.0.1:0", **settings)  # type: ignore[arg-type]
        self.cm = ClusterManager(self.cfg)
        self.port = self.cm.start()
        self.address = f"127.0.0.1:{self.port}"
        self._clients: list[ClusterClient] = []

    @property
    def cluster(self):  # type: ignore[no-untyped-def]
        return self.cm.cluster

    def client(self, user: str = "root") -> ClusterClient:
        c = ClusterClient(self.address, user=user, timeout=10)
        self._clients.append(c)
        return c

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self.cm.stop()


@contextmanager
def inproc_cm(tmp_path: Path, **settings: object) -> Iterator[InProcCM]:
    cm = InProcCM(tmp_path, **settings)
    try:
        yield cm
    finally:
        cm.stop()


# -- node managers --------------------------------------------------------------------


@contextmanager
def serving_nm(servicer: nm_grpc.NodeManagerServiceServicer) -> Iterator[str]:
    """A scripted NodeManagerService on loopback; yields its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    nm_grpc.add_NodeManagerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


def node_xml(path: Path, cores: int = 4, memory_mib: int = 8192) -> Path:
    """A libvirt test-driver host description: `test:///<path>` is a host of this size."""
    path.write_text(
        "<node><cpu><nodes>1</nodes><sockets>1</sockets>"
        f"<cores>{cores}</cores><threads>1</threads></cpu>"
        f"<memory>{memory_mib * 1024}</memory></node>\n")
    return path


class NMProcess(Process):
    """`tashi-nm` on a simulated libvirt host (the test driver) unless `libvirt_uri`
    says otherwise; `prefix` runs it inside something (nsenter ...)."""

    def __init__(self, workdir: Path, cm_address: str, hostname: str, *,
                 libvirt_uri: str = "", images: Path | None = None, cores: int = 4,
                 memory_mib: int = 8192, reserved_memory: int = 0,
                 heartbeat_seconds: float = 0.5, extra: list[str] | None = None,
                 prefix: list[str] | None = None, site: Site | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.hostname = hostname
        if not libvirt_uri:
            libvirt_uri = "test://" + str(node_xml(workdir / "node.xml", cores, memory_mib))
        self.images = images or workdir / "images"
        self.images.mkdir(exist_ok=True)
        self.state_dir = workdir / "state"
        argv = [*(prefix or []), bin_path("tashi-nm"), "--listen", "127.0.0.1:0",
                "--cm", cm_address, "--hostname", hostname, "--libvirt-uri", libvirt_uri,
                "--images", str(self.images), "--state-dir", str(self.state_dir),
                "--reserved-memory", str(reserved_memory),
                "--heartbeat-seconds", str(heartbeat_seconds),
                *site_flags(site, "node", hostname), *(extra or [])]
        super().__init__(argv, workdir / "nm.log")
        # The node manager answers the cluster manager only: the test speaks as it.
        self._channel = channel(self.address,
                                site.tls("service", "tashi-cm") if site is not None else None)
        self.stub = nm_grpc.NodeManagerServiceStub(self._channel)

    def stop(self, timeout: float = 10.0) -> None:
        ch = getattr(self, "_channel", None)  # none when the process did not start
        if ch is not None:
            ch.close()
        super().stop(timeout)

    def kill(self) -> None:
        super().kill()
        self.stop()


# -- the scheduler --------------------------------------------------------------------


class SchedulerProcess(Process):
    """`tashi-scheduler`, ready once it says it is connected to the CM."""

    def __init__(self, workdir: Path, cm_address: str, *extra: str, name: str = "sched",
                 site: Site | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__([bin_path("tashi-scheduler"), "--cm", cm_address,
                          *site_flags(site, "service", "tashi-scheduler"), *extra],
                         workdir / f"{name}.log", ready=CONNECTED_RE)


@contextmanager
def running_agent(address: str, **settings: object) -> Iterator[Agent]:
    """An agent on its own thread against the CM at `address`."""
    config = SchedulerConfig(cm=address, **settings)  # type: ignore[arg-type]
    client = ClusterClient(address, timeout=10)
    connected = threading.Event()
    agent = Agent(client, config, on_connected=connected.set)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        assert connected.wait(10), "the agent did not connect"
        yield agent
    finally:
        agent.stop()
        thread.join(10)
        client.close()
        assert not thread.is_alive()


# -- accounting -----------------------------------------------------------------------


def start_accounting(workdir: Path, cm: str, *extra: str, db: Path | None = None,
                     listen: str = "127.0.0.1:0", site: Site | None = None) -> Process:
    """`tashi-accounting` as an operator starts it; its log is workdir/accounting.log."""
    argv = [bin_path("tashi-accounting"), "--db", str(db or workdir / "ledger.sqlite"),
            "--cm", cm, "--listen", listen, *site_flags(site, "service", "tashi-accounting"),
            *extra]
    return Process(argv, workdir / "accounting.log")


# -- speaking for a user or a host ----------------------------------------------------


def vm(name: str, cores: int = 1, memory_mib: int = 64, **spec: object) -> pb.Instance:
    """What a user sends to create an instance: a name and a spec."""
    return pb.Instance(name=name, spec=pb.InstanceSpec(  # type: ignore[arg-type]
        cores=cores, memory_mib=memory_mib, **spec))


def register_host(client: ClusterClient, name: str, cores: int = 8, memory_mib: int = 16384,
                  nm_address: str = "", add: bool = True,
                  instances: list[nr.InstanceReport] | None = None) -> nr.RegisterHostResponse:
    """Add a host and register it as its node manager would (synthetic capacity)."""
    if add:
        client.create_host(name)
    return client.call(client.registry.RegisterHost, nr.RegisterHostRequest(
        name=name, cores=cores, memory_mib=memory_mib, version="0.1.0", nm_address=nm_address,
        instances=instances or [], capabilities=pb.HostCapabilities(
            migration_uri=f"qemu+tcp://{name}/system", live_migration=True)))


def activate(client: ClusterClient, iid: int, host_id: int) -> None:
    """Place instance `iid` on `host_id` as the scheduler would; it must be accepted."""
    res = client.activate([pl.Placement(instance_id=iid, host_id=host_id)]).results[0]
    assert res.accepted, res.reason


# -- waits ----------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = ""):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy and return that; fail
    with AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


def up_host(client: ClusterClient, name: str) -> pb.Host:
    """Wait until host `name` is up and return it."""
    return wait_for(lambda: (h := client.get_host(name)).up and h, what=f"{name} up")


def state(client: ClusterClient, iid: int) -> int:
    """Instance `iid`'s state, -1 once it is gone."""
    try:
        return client.get_instance(iid).status.state
    except TashiError as exc:
        if exc.code == grpc.StatusCode.NOT_FOUND:
            return -1
        raise


def wait_state(client: ClusterClient, iid: int, want: int, timeout: float = 10.0) -> None:
    """Wait until instance `iid` is in state `want` (-1: gone)."""
    wait_for(lambda: state(client, iid) == want, timeout=timeout,
             what=f"instance {iid} in state {want}")


def states(client: ClusterClient) -> Counter[int]:
    """How many instances are in each state."""
    return Counter(i.status.state for i in client.list_instances())


def wait_states(client: ClusterClient, timeout: float = 30.0, **want: int) -> None:
    """Wait until the instances are in these states (activating=400, held=100 ...)."""
    expected = {getattr(pb, f"INSTANCE_STATE_{k.upper()}"): n for k, n in want.items()}
    deadline = time.monotonic() + timeout
    while True:
        now = states(client)
        if all(now[s] == n for s, n in expected.items()):
            return
        if time.monotonic() > deadline:
            shown = {instance_state_name(s): n for s, n in now.items()}
            raise AssertionError(f"after {timeout}s the instances are {shown}, not {want}")
        time.sleep(0.05)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


METRICS_RE = re.compile(r"serving metrics on http://(\S+)/metrics")


def metrics_address(proc: Process) -> str:
    """Where a service started with --metrics-listen 127.0.0.1:0 serves /metrics."""
    return str(wait_for(lambda: (m := METRICS_RE.search(proc.log_path.read_text(
        errors="replace"))) and m.group(1), what=f"{proc.argv[0]} serving metrics"))


def scrape(address: str, timeout: float = 5.0) -> Samples:
    """Every sample a /metrics endpoint serves, by name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}
