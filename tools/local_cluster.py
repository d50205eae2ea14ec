"""Bring up a local Tashi cluster on the embedded defaults and show it working.

    python tools/local_cluster.py [--keep-running]

Starts a cluster manager on loopback with a store in a scratch directory,
then walks through what an operator does first: add a user, a host, a
network, create VMs, and list them.  Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


class Service:
    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = open(log, "wb")
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


def tashi(cm: str, *args: str, user: str = "root") -> None:
    print(f"\n$ tashi {' '.join(args)}" + (f"   (as {user})" if user != "root" else ""))
    env = {**os.environ, "TASHI_CM": cm, "TASHI_USER": user}
    res = subprocess.run([str(BIN / "tashi"), *args], env=env, text=True, capture_output=True)
    sys.stdout.write(res.stdout)
    if res.returncode:
        sys.stdout.write(res.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keep-running", action="store_true", help="wait for Ctrl-C at the end")
    ns = ap.parse_args()
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="tashi-local-") as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        image = work / "images" / "debian.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=False)
        try:
            print("starting services (logs in a scratch dir):")
            cm = Service("tashi-cm", [str(BIN / "tashi-cm"), "--listen", "127.0.0.1:0",
                                      "--db", str(work / "cm.db"), "--images",
                                      str(work / "images")], work / "cm.log")
            services.append(cm)
            tashi(cm.address, "addUser", "--name", "alice")
            tashi(cm.address, "addHost", "--name", "node1", "--notes", "rack 1")
            tashi(cm.address, "addNetwork", "--id", "1", "--name", "lan", "--flat", "--default")
            tashi(cm.address, "getImages")
            tashi(cm.address, "createMany", "--basename", "web", "--count", "4", "--cores", "1",
                  "--memory", "256", "--nics", "1", "--disks", "debian.qcow2", user="alice")
            tashi(cm.address, "createVm", "--name", "db", "--cores", "2", "--memory", "1024",
                  user="alice")
            tashi(cm.address, "getInstances", "--show-nics")
            tashi(cm.address, "getHosts")
            if ns.keep_running:
                print(f"\ncluster manager on {cm.address}; Ctrl-C stops it")
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
        finally:
            for svc in reversed(services):
                svc.stop()
            print("\nstopped every service it started")
        time.sleep(0)


if __name__ == "__main__":
    main()
