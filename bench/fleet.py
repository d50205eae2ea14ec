"""A fleet of simulated hosts: many real node managers in a few processes.

Each host is the node manager's own code path, not a stub of the registry
calls: a `tashi.nm.node.NodeManager` with its own libvirt connection to the
test driver (`test:///<its node.xml>`, a host of its own size: libvirt's test
driver defines, starts and destroys domains inside that connection), its own
Reporter (registration, heartbeats, reports) and its own NodeManagerService
on a loopback port the CM calls.  `Fleet` splits N such hosts over K worker
processes (`python -m bench.fleet --worker ...`), each serving its share with
a small gRPC thread pool per host; it can freeze whole worker processes
(SIGSTOP: every host in it goes silent at once, connections left open, VMs
kept in libvirt) and thaw them, and halt / restart single hosts in place (the
NM stops serving and reporting; its libvirt connection, like a libvirtd that
outlives the NM, keeps the VMs, and the restarted NM re-registers them).

    python -m bench.fleet --hosts 1000 --procs 8 --cm HOST:PORT

adds the hosts to the CM (as root), starts them, prints one `fleet ready`
line with the cost per host, and runs until SIGINT / SIGTERM.
"""

from __future__ import annotations

import os

# As in tashi-nm (nm/main.py): gRPC's fork handlers off before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import grpc  # noqa: E402

from bench.procs import proc_status  # noqa: E402
from tashi.nm.config import NmConfig  # noqa: E402
from tashi.nm.node import NodeManager  # noqa: E402
from tashi.runtime import server  # noqa: E402
from tashi.runtime.client import ClusterClient, TashiError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]  # workers run `-m bench.fleet` from here
READY = "fleet-worker ready "


def node_xml(path: Path, cores: int, memory_mib: int) -> Path:
    """A libvirt test-driver host description (as tests.harness.node_xml)."""
    path.write_text(
        "<node><cpu><nodes>1</nodes><sockets>1</sockets>"
        f"<cores>{cores}</cores><threads>1</threads></cpu>"
        f"<memory>{memory_mib * 1024}</memory></node>\n")
    return path


# -- the worker: one process holding a share of the hosts ----------------------------


class Worker:
    """The node managers of one process, started and stopped on command."""

    def __init__(self, cm: str, names: list[str], workdir: Path, cores: int, memory_mib: int,
                 heartbeat_seconds: float, server_workers: int) -> None:
        self.nodes: dict[str, NodeManager] = {}
        self.ports: dict[str, int] = {}
        for name in names:
            d = workdir / name
            (d / "images").mkdir(parents=True, exist_ok=True)
            xml = node_xml(d / "node.xml", cores, memory_mib)
            cfg = NmConfig(listen="127.0.0.1:0", cm=cm, hostname=name,
                           libvirt_uri=f"test://{xml}", images=str(d / "images"),
                           state_dir=str(d / "state"), reserved_memory=0,
                           heartbeat_seconds=heartbeat_seconds, log_level="WARNING")
            self.nodes[name] = NodeManager(cfg, server_workers=server_workers)

    def start(self, names: list[str]) -> dict[str, str]:
        out = {}
        for name in names:
            node = self.nodes[name]
            port = node.start()
            if name not in self.ports:  # a restart comes back on the same port
                self.ports[name] = port
                node.cfg.listen = node.cfg.advertise = f"127.0.0.1:{port}"
            out[name] = node.cfg.advertise
        return out

    def halt(self, names: list[str]) -> None:
        """Stop serving and reporting; the libvirt connection (and its VMs) stays."""
        def one(name: str) -> None:
            node = self.nodes[name]
            if node.reporter is not None:
                node.reporter.stop()
                node.reporter = None
            if node.running is not None:
                node.running.stop(grace=0.2)
                node.running = None
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, names))

    def vms(self, names: list[str]) -> dict[str, list[int]]:
        """The instance ids each host's libvirt runs (read from libvirt by the driver)."""
        return {n: sorted(v.instance_id for v in self.nodes[n].driver.list_vms())
                for n in names}

    def stop(self) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: n.stop(), self.nodes.values()))


def worker_main(ns: argparse.Namespace) -> None:
    """Commands on stdin, one line each: `halt|resume|vms NAME...`, `quit`; every
    answer is one JSON line on stdout."""
    server.setup_logging(ns.log_level)
    names = ns.names.split(",")
    worker = Worker(ns.cm, names, Path(ns.workdir), ns.cores, ns.memory_mib,
                    ns.heartbeat_seconds, ns.server_workers)
    addresses = worker.start(names)
    print(READY + json.dumps(addresses), flush=True)
    for line in sys.stdin:
        verb, *args = line.split()
        if verb == "halt":
            worker.halt(args)
            print(json.dumps({"ok": len(args)}), flush=True)
        elif verb == "resume":
            print(json.dumps(worker.start(args)), flush=True)
        elif verb == "vms":
            print(json.dumps(worker.vms(args or names)), flush=True)
        elif verb == "quit":
            break
    worker.stop()


# -- the fleet: the parent's handle on the workers ------------------------------------


@dataclass
class Group:
    """One worker process and the hosts it holds."""

    names: list[str]
    proc: subprocess.Popen[str] | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ask(self, line: str) -> object:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        with self.lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())


@dataclass
class Cost:
    rss_bytes: int
    threads: int
    hosts: int

    @property
    def rss_per_host(self) -> float:
        return self.rss_bytes / max(1, self.hosts)

    @property
    def threads_per_host(self) -> float:
        return self.threads / max(1, self.hosts)

    def __str__(self) -> str:
        return (f"{self.rss_bytes / 2**20:,.0f} MiB RSS and {self.threads} threads for "
                f"{self.hosts} hosts: {self.rss_per_host / 2**20:.2f} MiB and "
                f"{self.threads_per_host:.1f} threads per host")


class Fleet:
    """`hosts` simulated hosts named PREFIX0.. over `procs` worker processes; with
    `isolate`, the last `isolate` hosts get a worker of their own (so they can be
    frozen together: `freeze(fleet.groups[-1])`)."""

    def __init__(self, cm: str, hosts: int, procs: int, workdir: Path | None = None, *,
                 cores: int = 32, memory_mib: int = 65536, heartbeat_seconds: float = 2.0,
                 isolate: int = 0, server_workers: int = 2, prefix: str = "fh",
                 log_level: str = "WARNING", nice: int = 0) -> None:
        """`nice`: the workers' niceness.  Real hosts have CPUs of their own; on one
        machine a positive value leaves the control plane the CPU it needs first,
        and the simulated hosts the rest."""
        if hosts < 1 or procs < 1 or not 0 <= isolate < hosts or (isolate and procs < 2):
            raise ValueError("need hosts >= 1, procs >= 1 and 0 <= isolate < hosts "
                             "(isolating takes one of the processes)")
        self.cm = cm
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="fleet-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.names = [f"{prefix}{i}" for i in range(hosts)]
        self.cores, self.memory_mib = cores, memory_mib
        self.heartbeat_seconds = heartbeat_seconds
        self.server_workers = server_workers
        self.log_level = log_level
        self.nice = nice
        shared = self.names[:hosts - isolate]
        k = procs - (1 if isolate else 0)
        self.groups = [Group(shared[i::k]) for i in range(k) if shared[i::k]]
        if isolate:
            self.groups.append(Group(self.names[hosts - isolate:]))
        self._by_name = {n: g for g in self.groups for n in g.names}

    # -- life -------------------------------------------------------------------------
    def add_hosts(self, client: ClusterClient) -> None:
        """Add every host to the CM (an existing one is kept)."""
        for name in self.names:
            try:
                client.create_host(name)
            except TashiError as exc:
                if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                    raise

    def start(self, timeout: float = 300.0) -> None:
        """Add the hosts to the CM, start every worker and wait for their ready lines."""
        client = ClusterClient(self.cm, timeout=30)
        try:
            self.add_hosts(client)
        finally:
            client.close()
        env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"}
        for i, g in enumerate(self.groups):
            argv = [*(["nice", "-n", str(self.nice)] if self.nice else []),
                    sys.executable, "-m", "bench.fleet", "--worker", "--cm", self.cm,
                    "--names", ",".join(g.names), "--workdir", str(self.workdir),
                    "--cores", str(self.cores), "--memory-mib", str(self.memory_mib),
                    "--heartbeat-seconds", str(self.heartbeat_seconds),
                    "--server-workers", str(self.server_workers),
                    "--log-level", self.log_level]
            with open(self.workdir / f"worker{i}.log", "ab") as log:  # the child keeps it
                g.proc = subprocess.Popen(argv, cwd=REPO, env=env, text=True,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=log)
        deadline = time.monotonic() + timeout
        for i, g in enumerate(self.groups):
            assert g.proc is not None and g.proc.stdout is not None
            line = g.proc.stdout.readline()  # the worker's first line is its ready line
            if not line.startswith(READY) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fleet worker {i} did not start; see "
                                   f"{self.workdir / f'worker{i}.log'}")
            g.addresses = json.loads(line[len(READY):])

    def wait_up(self, client: ClusterClient, names: list[str] | None = None,
                timeout: float = 120.0) -> float:
        """Wait until the CM counts these hosts (all by default) up; seconds waited."""
        want = set(names or self.names)
        t0 = time.monotonic()
        while True:
            up = {h.name for h in client.list_hosts() if h.up}
            if want <= up:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{len(want - up)} of {len(want)} hosts not up after "
                                   f"{timeout:g}s")
            time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every worker (quit, then SIGKILL after `timeout`)."""
        for g in self.groups:
            if g.proc is None or g.proc.poll() is not None:
                continue
            os.kill(g.proc.pid, signal.SIGCONT)  # a frozen worker must run to quit
            try:
                assert g.proc.stdin is not None
                g.proc.stdin.write("quit\n")
                g.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        for g in self.groups:
            if g.proc is None:
                continue
            try:
                g.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                g.proc.kill()
                g.proc.wait(10)
            if g.proc.stdout is not None:
                g.proc.stdout.close()

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests and benches look at -----------------------------------------------
    @property
    def addresses(self) -> dict[str, str]:
        return {n: a for g in self.groups for n, a in g.addresses.items()}

    def pids(self) -> list[int]:
        return [g.proc.pid for g in self.groups if g.proc is not None]

    def cost(self) -> Cost:
        rss = threads = 0
        for pid in self.pids():
            r, t = proc_status(pid)
            rss, threads = rss + r, threads + t
        return Cost(rss, threads, len(self.names))

    def _by_group(self, names: list[str]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for n in names:
            out.setdefault(self.groups.index(self._by_name[n]), []).append(n)
        return out

    def vms(self, names: list[str] | None = None) -> dict[str, list[int]]:
        """Instance ids each host's own libvirt connection lists."""
        out: dict[str, list[int]] = {}
        for gi, ns in self._by_group(names or self.names).items():
            answer = self.groups[gi].ask("vms " + " ".join(ns))
            assert isinstance(answer, dict)
            out.update(answer)
        return out

    # -- failures -----------------------------------------------------------------------
    def freeze(self, group: Group) -> None:
        """SIGSTOP the worker: its hosts stop answering and heartbeating at once."""
        assert group.proc is not None
        os.kill(group.proc.pid, signal.SIGSTOP)

    def thaw(self, group: Group) -> None:
        assert group.proc is not None
        os.kill(group.proc.pid, signal.SIGCONT)

    def halt(self, names: list[str]) -> None:
        """Stop these hosts' node managers in place (serving, heartbeats, reports)."""
        for gi, ns in self._by_group(names).items():
            self.groups[gi].ask("halt " + " ".join(ns))

    def resume(self, names: list[str]) -> None:
        """Start halted node managers again, on their ports; they register anew."""
        for gi, ns in self._by_group(names).items():
            self.groups[gi].ask("resume " + " ".join(ns))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cm", required=True, help="cluster manager HOST:PORT")
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--cores", type=int, default=32)
    parser.add_argument("--memory-mib", type=int, default=65536)
    parser.add_argument("--heartbeat-seconds", type=float, default=2.0)
    parser.add_argument("--server-workers", type=int, default=2,
                        help="gRPC threads per host at most")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--names", default="", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.worker:
        worker_main(ns)
        return
    logging.basicConfig(level=logging.WARNING)
    fleet = Fleet(ns.cm, ns.hosts, ns.procs, Path(ns.workdir) if ns.workdir else None,
                  cores=ns.cores, memory_mib=ns.memory_mib,
                  heartbeat_seconds=ns.heartbeat_seconds, server_workers=ns.server_workers,
                  log_level=ns.log_level)
    t0 = time.monotonic()
    fleet.start()
    client = ClusterClient(ns.cm, timeout=30)
    try:
        fleet.wait_up(client)
        print(f"fleet ready: {ns.hosts} hosts up in {len(fleet.groups)} processes after "
              f"{time.monotonic() - t0:.1f}s; {fleet.cost()}", flush=True)
        server.wait_for_signal(lambda: None)
    finally:
        client.close()
        fleet.stop()


if __name__ == "__main__":
    main()
