"""A tiny real Linux guest and a private libvirtd for the node manager's system tests.

- The kernel is Debian's cloud kernel, fetched with `apt-get download` and
  unpacked with `dpkg-deb -x` into a cache the tests own
  (`$TASHI_TEST_CACHE`, default /var/cache/tashi-tests), once per machine.
- The initramfs is built here from busybox-static: it prints TASHI-GUEST-UP,
  then a tick every second, and powers off when the ACPI power button is
  pressed (so `ShutdownVm` is really exercised).  A shell without prompt reads
  commands from the serial port (ttyS0) and runs each line: what a console
  session types is answered on the console (`echo hello-$((6*7))` prints
  hello-42), and nothing is printed unless something is typed.
- libvirtd and virtlogd run in a private mount namespace (their run, state,
  cache, log and config dirs bind-mounted from the test's own folder) and a
  private network namespace, so nothing of the machine's libvirt or network
  is seen or touched.  Processes that must talk to this libvirtd (the NM)
  run with `nsenter --mount` into the namespace.  Several daemons may share
  one network namespace (`net_of`) and each see its own /etc (`etc_overlay`):
  tests/twohosts.py makes two hypervisors that migrate guests to each other.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("TASHI_TEST_CACHE", "/var/cache/tashi-tests"))
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
GUEST_UP = "TASHI-GUEST-UP"
GUEST_POWEROFF = "TASHI-GUEST-POWEROFF"
CMDLINE = "console=ttyS0 panic=-1 quiet"

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
insmod /lib/evdev.ko
insmod /lib/button.ko
for ev in /sys/class/input/event*; do
  if grep -q "Power Button" "$ev/device/name"; then
    (head -c 1 "/dev/input/${ev##*/}" >/dev/null; echo @OFF@; poweroff -f) &
  fi
done
(setsid sh -c 'exec </dev/ttyS0 >/dev/ttyS0 2>&1; while read -r line; do eval "$line"; done' &)
echo @UP@
n=0
while true; do sleep 1; n=$((n+1)); echo "tick $n"; done
""".replace("@OFF@", GUEST_POWEROFF).replace("@UP@", GUEST_UP)

# guest_files(disk_ticks=True): the virtio disk driver (modules in dependency order),
# and each tick also written to the first sector of /dev/vda (NUL-padded, flushed).
DISK_MODULES = ("drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
                "drivers/virtio/virtio_pci_legacy_dev.ko",
                "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci.ko",
                "drivers/block/virtio_blk.ko")
DISK_INIT = INIT.replace(
    "echo " + GUEST_UP,
    "".join(f"insmod /lib/{Path(m).name}\n" for m in DISK_MODULES)
    + "while [ ! -b /dev/vda ]; do sleep 0.1; done\necho " + GUEST_UP).replace(
    'echo "tick $n"; done',
    'echo "tick $n"; echo "tick $n" | dd of=/dev/vda bs=512 conv=sync,fsync 2>/dev/null; done')


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def cloud_kernel() -> Path:
    """The unpacked kernel package's root (boot/vmlinuz-*, lib/modules/...)."""
    root = CACHE / "kernel"
    if not list(root.glob("boot/vmlinuz-*")):
        deps = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True,
                              text=True, timeout=60).stdout
        if "Depends:" not in deps:  # no package lists yet on this machine
            _run(["apt-get", "update", "-qq"])
            deps = _run(["apt-cache", "depends", KERNEL_META])
        m = re.search(r"Depends:\s*(linux-image-\S+)", deps)
        if not m:
            raise RuntimeError(f"apt-cache knows no kernel behind {KERNEL_META} "
                               "(run apt-get update)")
        debs = CACHE / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "download", m.group(1)], cwd=debs)
        deb = sorted(debs.glob(f"{m.group(1)}_*.deb"))[-1]
        tmp = CACHE / "kernel.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return root


def _module(root: Path, rel: str) -> bytes:
    base = next((root / "lib" / "modules").iterdir()) / "kernel" / rel
    if base.exists():
        return base.read_bytes()
    xz = base.with_name(base.name + ".xz")
    if xz.exists():
        return lzma.decompress(xz.read_bytes())
    raise RuntimeError(f"kernel module {rel} not in the kernel package")


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive, as the kernel unpacks an initramfs."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        out += b"070701" + b"".join(b"%08X" % v for v in fields) + raw
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def guest_files(dest: Path, disk_ticks: bool = False) -> tuple[Path, Path]:
    """vmlinuz and initrd.gz of the test guest, written into `dest` (an image store).

    `disk_ticks`: the guest also writes each "tick N" to the first sector of its
    first virtio disk (which it then needs: it waits for /dev/vda).
    """
    root = cloud_kernel()
    kernel = dest / "vmlinuz"
    shutil.copyfile(next(root.glob("boot/vmlinuz-*")), kernel)
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    initrd = dest / "initrd.gz"
    modules = ["drivers/input/evdev.ko", "drivers/acpi/button.ko"]
    modules += DISK_MODULES if disk_ticks else []
    initrd.write_bytes(gzip.compress(_cpio([
        ("bin", d, b""), ("lib", d, b""),
        ("bin/busybox", x, BUSYBOX.read_bytes()),
        *[(f"lib/{Path(m).name}", f, _module(root, m)) for m in modules],
        ("init", x, (DISK_INIT if disk_ticks else INIT).encode()),
    ]), compresslevel=1))
    return kernel, initrd


QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
"""

BINDS = {"run": "/run/libvirt", "lib": "/var/lib/libvirt", "cache": "/var/cache/libvirt",
         "log": "/var/log/libvirt", "etc": "/etc/libvirt"}


class PrivateLibvirt:
    """libvirtd + virtlogd of our own; `enter` prefixes a command to run beside them."""

    def __init__(self, workdir: Path, *, net_of: int | None = None,
                 etc_overlay: Path | None = None, libvirtd_conf: str = "",
                 qemu_conf: str = "", listen: bool = False, virtlogd_conf: str = "") -> None:
        """`net_of`: the pid of a process whose network namespace to share (default: a
        new one).  `etc_overlay`: a folder laid over the machine's /etc inside the
        mount namespace (overlayfs upper dir), for files such as /etc/hosts or
        /etc/pki that must differ per daemon without touching the machine's /etc.
        `libvirtd_conf` / `qemu_conf`: lines appended to the daemon's config;
        `virtlogd_conf`: virtlogd's (e.g. max_size, max_backups of the logs it rotates).
        `listen`: libvirtd --listen (the TCP/TLS sockets libvirtd.conf asks for)."""
        self.workdir = workdir
        for sub in BINDS:
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        (workdir / "etc" / "qemu.conf").write_text(QEMU_CONF + qemu_conf)
        (workdir / "etc" / "libvirtd.conf").write_text('unix_sock_rw_perms = "0700"\n'
                                                       + libvirtd_conf)
        (workdir / "etc" / "virtlogd.conf").write_text(virtlogd_conf)
        mounts = [f"mkdir -p {dst} && mount --bind {workdir / src} {dst}"
                  for src, dst in BINDS.items()]
        if etc_overlay is not None:
            scratch = workdir / "etc-overlay-work"
            scratch.mkdir(exist_ok=True)
            mounts.insert(0, "mount -t overlay overlay -o "
                          f"lowerdir=/etc,upperdir={etc_overlay},workdir={scratch} /etc")
        self._logs = [open(workdir / n, "ab") for n in ("holder.log", "virtlogd.log",
                                                         "libvirtd.log")]
        self._libvirtd_args = ["--listen"] if listen else []
        if net_of is None:
            unshare = ["unshare", "--mount", "--net", "--propagation", "private"]
        else:
            unshare = ["nsenter", f"--net=/proc/{net_of}/ns/net",
                       "unshare", "--mount", "--propagation", "private"]
        # The holder keeps the namespaces alive; everything else enters them.
        self.holder = subprocess.Popen(
            [*unshare, "sh", "-c", f"{' && '.join(mounts)} && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE, stderr=self._logs[0])
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            assert self.holder.stdout is not None
            if self.holder.stdout.readline().strip() != b"ready":
                raise RuntimeError("could not set up the private namespaces: "
                                   + (workdir / "holder.log").read_text())
            # Own pid files: the defaults (/run/*.pid) are outside the bind mounts.
            self.procs.append(subprocess.Popen(
                self.enter(net=True) + ["virtlogd", "--pid-file", "/run/libvirt/virtlogd.pid"],
                stdout=self._logs[1], stderr=self._logs[1]))
            self._start_libvirtd()
        except BaseException:
            self.stop()
            raise

    def _start_libvirtd(self) -> None:
        self.libvirtd = subprocess.Popen(
            self.enter(net=True) + ["libvirtd", "--pid-file", "/run/libvirt/libvirtd.pid",
                                    *self._libvirtd_args],
            stdout=self._logs[2], stderr=self._logs[2])
        self.procs.append(self.libvirtd)
        self._wait_socket()

    def restart_libvirtd(self) -> None:
        """Stop and start libvirtd; the guests (QEMU processes) keep running."""
        self.libvirtd.terminate()
        self.libvirtd.wait(20)
        self.procs.remove(self.libvirtd)
        try:
            self._start_libvirtd()
        except BaseException:
            self.stop()
            raise

    def enter(self, net: bool = False) -> list[str]:
        argv = ["nsenter", "-t", str(self.holder.pid), "--mount"]
        return argv + ["--net"] if net else argv

    def _wait_socket(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ok = subprocess.run(self.enter() + ["virsh", "-c", "qemu:///system", "version"],
                                capture_output=True, timeout=30).returncode == 0
            if ok:
                return
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError("private libvirtd did not come up:\n"
                                   + (self.workdir / "libvirtd.log").read_text()[-2000:])
            time.sleep(0.2)

    def virsh(self, *args: str) -> str:
        return _run(self.enter() + ["virsh", "-c", "qemu:///system", *args])

    def guest_pids(self) -> list[int]:
        """QEMU processes of this libvirtd (they live in our mount namespace)."""
        ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (os.readlink(entry / "ns" / "mnt") == ns
                        and b"qemu-system" in (entry / "cmdline").read_bytes()):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        if self.holder.poll() is None:
            for pid in self.guest_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(5)
        if self.holder.stdout is not None:
            self.holder.stdout.close()
        for fh in self._logs:
            fh.close()
