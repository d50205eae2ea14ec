"""Bring up a whole local Tashi cluster on the embedded defaults and show it working.

    python tools/local_cluster.py [--keep-running]

Starts, on loopback with stores in a scratch directory: accounting, a cluster
manager, three node managers on simulated hosts of different sizes (libvirt's
test driver, no daemon) and a scheduler; then creates a batch of VMs and
shows where they were placed, the slots left, and the usage billed so far.
Everything speaks mutual TLS: a site CA is made in the scratch directory
with `tashi certs`, and every service, host and user gets its certificate.
Each service serves Prometheus metrics on 127.0.0.1:9890-9895, the targets
of deploy/prometheus/prometheus.yml.  Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


class Service:
    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on (\S+)|connected to (\S+)", line)
        if not m:
            self.stop()
            sys.exit(f"{name} did not start (log: {log})")
        self.address = m.group(1) or m.group(2)
        print(f"  {name:<18} {line.strip()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


CERTS: Path = Path()  # the scratch site CA and its certificates, set in main()


def creds(kind: str, name: str) -> list[str]:
    """The --tls-* flags of one party (its certificate issued at start-up)."""
    return ["--tls-ca", str(CERTS / "ca.pem"), "--tls-cert", str(CERTS / f"{kind}s/{name}.pem"),
            "--tls-key", str(CERTS / f"{kind}s/{name}.key")]


def tashi(cm: str, *args: str, user: str = "root", quiet: bool = False) -> None:
    print(f"\n$ tashi {' '.join(args)}" + (f"   (as {user})" if user != "root" else ""))
    env = {**os.environ, "TASHI_CM": cm, "TASHI_USER": user, "TASHI_CA": str(CERTS / "ca.pem"),
           "TASHI_CERT": str(CERTS / f"users/{user}.pem"),
           "TASHI_KEY": str(CERTS / f"users/{user}.key")}
    res = subprocess.run([str(BIN / "tashi"), *args], env=env, text=True, capture_output=True)
    if not quiet:
        sys.stdout.write(res.stdout)
    if res.returncode:
        sys.stdout.write(res.stderr)


def run_quiet(args: list[str]) -> None:
    res = subprocess.run([str(BIN / "tashi"), *args], text=True, capture_output=True)
    if res.returncode:
        sys.exit(f"tashi {' '.join(args)} failed: {res.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_xml(path: Path, cores: int, memory_mib: int) -> str:
    """A libvirt test-driver host of this size: `test:///<path>` needs no daemon."""
    path.write_text("<node><cpu><nodes>1</nodes><sockets>1</sockets>"
                    f"<cores>{cores}</cores><threads>1</threads></cpu>"
                    f"<memory>{memory_mib * 1024}</memory></node>\n")
    return f"test://{path}"


HOSTS = [("node1", 4, 8192), ("node2", 8, 16384), ("node3", 16, 32768)]


def wait_settled(cm: str, timeout: float = 60.0) -> None:
    """Until no instance is Pending or Activating (the scheduler and NMs have acted)."""
    from tashi.runtime.client import ClusterClient
    from tashi.runtime.tls import Tls
    from tashi.v1 import resources_pb2 as pb

    busy = [pb.INSTANCE_STATE_PENDING, pb.INSTANCE_STATE_ACTIVATING]
    tls = Tls.load(CERTS / "ca.pem", CERTS / "users/root.pem", CERTS / "users/root.key")
    with ClusterClient(cm, tls=tls) as client:
        deadline = time.monotonic() + timeout
        while client.list_instances(states=busy) and time.monotonic() < deadline:
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keep-running", action="store_true", help="wait for Ctrl-C at the end")
    ns = ap.parse_args()
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="tashi-local-") as tmp:
        work = Path(tmp)
        images = work / "images"
        images.mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "debian.qcow2"),
                        "1G"], check=True)
        global CERTS
        CERTS = work / "ca"
        print("a site CA and a certificate for every service, host and user:")
        run_quiet(["certs", "init", "--dir", str(CERTS)])
        parties = [("service", "tashi-cm"), ("service", "tashi-scheduler"),
                   ("service", "tashi-accounting"), ("user", "root"), ("user", "alice"),
                   *(("node", name) for name, _c, _m in HOSTS)]
        for kind, name in parties:
            run_quiet(["certs", "issue", "--dir", str(CERTS), "--kind", kind, "--name", name])
        print(f"  tashi certs init; tashi certs issue x{len(parties)} (in {CERTS})")
        try:
            print("starting services on loopback (logs and stores in a scratch dir):")
            # As Tashi's operators did: accounting first, it waits for the CM.
            cm_address = f"127.0.0.1:{free_port()}"
            acct = Service("tashi-accounting", [
                str(BIN / "tashi-accounting"), "--listen", "127.0.0.1:0", "--cm", cm_address,
                "--db", str(work / "accounting.db"), "--metrics-listen", "127.0.0.1:9891",
                *creds("service", "tashi-accounting")],
                work / "accounting.log")
            services.append(acct)
            cm = Service("tashi-cm", [str(BIN / "tashi-cm"), "--listen", cm_address,
                                      "--db", str(work / "cm.db"), "--images", str(images),
                                      "--metrics-listen", "127.0.0.1:9890",
                                      *creds("service", "tashi-cm")],
                         work / "cm.log")
            services.append(cm)
            tashi(cm.address, "addUser", "--name", "alice")
            for name, _cores, _mem in HOSTS:
                tashi(cm.address, "addHost", "--name", name, quiet=True)
            for index, (name, cores, mem) in enumerate(HOSTS):
                uri = node_xml(work / f"{name}.xml", cores, mem)
                services.append(Service(f"tashi-nm {name}", [
                    str(BIN / "tashi-nm"), "--listen", "127.0.0.1:0", "--cm", cm.address,
                    "--hostname", name, "--libvirt-uri", uri, "--images", str(images),
                    "--state-dir", str(work / name), "--reserved-memory", "0",
                    "--metrics-listen", f"127.0.0.1:{9893 + index}", *creds("node", name)],
                    work / f"{name}.log"))
            services.append(Service("tashi-scheduler", [
                str(BIN / "tashi-scheduler"), "--cm", cm.address,
                "--metrics-listen", "127.0.0.1:9892", *creds("service", "tashi-scheduler")],
                work / "scheduler.log"))
            time.sleep(1.0)
            tashi(cm.address, "getHosts")
            tashi(cm.address, "createMany", "--basename", "web", "--count", "12", "--cores", "1",
                  "--memory", "1024", "--disks", "debian.qcow2", user="alice")
            tashi(cm.address, "createVm", "--name", "db", "--cores", "4", "--memory", "8192",
                  "--hints", "densePack=True", user="alice")
            tashi(cm.address, "createVm", "--name", "big", "--cores", "8", "--memory", "8192",
                  user="alice")
            tashi(cm.address, "createVm", "--name", "toobig", "--cores", "8", "--memory", "8192",
                  "--hints", "targetHost=node1", user="alice")
            wait_settled(cm.address)
            tashi(cm.address, "getInstances")
            tashi(cm.address, "getVmLayout")
            tashi(cm.address, "getSlots", "--cores", "2", "--memory", "2048")
            tashi(cm.address, "pauseVm", "--instance", "web-0", user="alice", quiet=True)
            tashi(cm.address, "destroyVm", "--instance", "web-1", user="alice", quiet=True)
            time.sleep(1.0)
            tashi(cm.address, "getUsage", "--accounting", acct.address)
            if ns.keep_running:
                print(f"\ncluster manager on {cm.address}; Ctrl-C stops everything")
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
        finally:
            for svc in reversed(services):
                svc.stop()
            print("\nstopped every service it started")


if __name__ == "__main__":
    main()
