"""Image upload and download throughput through Tashi beside `cp` of the same
file, measured in one run.

    python bench/bench_images.py [--size-mib 1024] [--rounds 2] [--dir DIR]

Two `tashi-cm` processes on loopback, one with mutual TLS (a site CA made by
`tashi certs`' code) and one in plaintext, each with its image store in a
scratch folder on the same file system as the file.  Each round copies the
file with `cp` and `dd bs=1M`, then for each CM and each way in uploads it
(`ClusterClient.upload_image`) and downloads it again (`download_image`),
deleting what it made as it goes:
- the data port (runtime/data_port.py): a ticket by gRPC, then the bytes in
  4 MiB reads and writes on one TCP (or TLS) connection, BLAKE3 checked;
- the gRPC streams: 1 MiB messages, sha256 checked (the client's sha256 pass
  over the file first, for the header).
An upload is done when the CM has checked its size and digest, detected its
format and linked it into place; a download when the client has checked its
digest and renamed the file into place.  Everything is in the page cache, for
`cp` too; before each timed step the dirty pages of the earlier ones are
synced (untimed), and no step syncs its own.  coreutils' cp has the kernel copy the file
(copy_file_range); dd moves the bytes through a process as Tashi must.
Figures are medians over rounds.  The scratch folder is removed at the end,
also after a failure or ^C.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tashi.runtime.certs import create_ca, issue
from tashi.runtime.client import ClusterClient
from tashi.runtime.tls import Tls

BIN = Path(sys.executable).parent
MIB = 1 << 20


def start_cm(work: Path, flags: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "images").mkdir()
    proc = subprocess.Popen([str(BIN / "tashi-cm"), "--listen", "127.0.0.1:0", "--db",
                             str(work / "cm.db"), "--images", str(work / "images"), *flags],
                            stdout=subprocess.PIPE, stderr=open(work / "cm.log", "wb"))
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"tashi-cm did not start: see {work / 'cm.log'}")
    return proc, m.group(1)


def make_file(path: Path, size: int) -> None:
    block = os.urandom(16 * MIB)
    with open(path, "wb") as f:
        for done in range(0, size, len(block)):
            f.write(block[: min(len(block), size - done)])


def timed(run: Callable[..., object], *args: object) -> float:
    """Seconds `run` takes, from a clean start: what earlier steps wrote is flushed
    first (untimed), so no step pays for another's writeback."""
    os.sync()
    t0 = time.perf_counter()
    run(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the image")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", help="scratch folder's parent (default: the system's temp)")
    args = ap.parse_args()
    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="tashi-bench-images-", dir=args.dir))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    clients: dict[str, ClusterClient] = {}
    try:
        ca = work / "ca"
        create_ca(ca)
        cm_cert, cm_key = issue(ca, "service", "tashi-cm")
        root_cert, root_key = issue(ca, "user", "root")
        flags = ["--tls-ca", str(ca / "ca.pem"), "--tls-cert", str(cm_cert),
                 "--tls-key", str(cm_key)]
        for mode, mode_flags, tls in (
                ("plaintext", [], None),
                ("mutual TLS", flags, Tls.load(ca / "ca.pem", root_cert, root_key))):
            procs[mode], address = start_cm(work / mode.replace(" ", "-"), mode_flags)
            clients[mode] = ClusterClient(address, timeout=60, tls=tls)
            clients[mode].list_images()  # connect (and handshake) before timing
        src = work / "disk.raw"
        make_file(src, size)
        figures: dict[str, list[float]] = {"cp": [], "dd": []}
        for r in range(args.rounds):
            dst = work / "cp.raw"
            figures["cp"].append(timed(subprocess.run, ["cp", str(src), str(dst)]))
            dst.unlink()
            figures["dd"].append(timed(subprocess.run, ["dd", f"if={src}", f"of={dst}",
                                                        "bs=1M", "status=none"]))
            dst.unlink()
            for (mode, client), (way, port) in itertools.product(
                    clients.items(), (("data port", True), ("stream", False))):
                name, back = f"r{r}.raw", work / "back.raw"
                figures.setdefault(f"{mode} {way} upload", []).append(
                    timed(functools.partial(client.upload_image, src, name, data_port=port)))
                # The client checks the download's digest against the CM's, which
                # checked the upload's against the file's.
                figures.setdefault(f"{mode} {way} download", []).append(
                    timed(functools.partial(client.download_image, name, back, data_port=port)))
                if back.stat().st_size != size:
                    sys.exit("the download is not the file uploaded")
                back.unlink()
                client.delete_image(name)
        rate = {k: size / MIB / statistics.median(v) for k, v in figures.items()}
        print(f"{args.size_mib} MiB image, {args.rounds} round(s), median; one tashi-cm each "
              "on loopback")
        print(f"  {'cp':<32} {rate['cp']:8.0f} MiB/s   (copy_file_range: the "
              "kernel copies, no process touches the bytes)")
        print(f"  {'dd bs=1M':<32} {rate['dd']:8.0f} MiB/s   "
              f"{rate['dd'] / rate['cp']:5.0%} of cp (through a process, 1 MiB at a time)")
        for key in figures:
            if key not in ("cp", "dd"):
                print(f"  {key:<32} {rate[key]:8.0f} MiB/s   {rate[key] / rate['cp']:5.0%} of cp"
                      f"   {rate[key] / rate['dd']:5.0%} of dd")
        print(f"  load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
              "CPUs (client and CMs share them)")
    finally:
        for client in clients.values():
            client.close()
        for proc in procs.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
