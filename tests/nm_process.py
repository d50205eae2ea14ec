"""Node managers as real processes for tests: `tashi-nm` on a simulated libvirt host."""

from __future__ import annotations

from pathlib import Path

from tashi.runtime.client import channel
from tashi.v1 import node_manager_pb2_grpc as nm_grpc
from tests.cluster import Process, bin_path


def node_xml(path: Path, cores: int = 4, memory_mib: int = 8192) -> Path:
    """A libvirt test-driver host description: `test:///<path>` is a host of this size."""
    path.write_text(
        "<node><cpu><nodes>1</nodes><sockets>1</sockets>"
        f"<cores>{cores}</cores><threads>1</threads></cpu>"
        f"<memory>{memory_mib * 1024}</memory></node>\n")
    return path


class NMProcess(Process):
    def __init__(self, workdir: Path, cm_address: str, hostname: str, *,
                 libvirt_uri: str = "", images: Path | None = None, cores: int = 4,
                 memory_mib: int = 8192, reserved_memory: int = 0,
                 heartbeat_seconds: float = 0.5, extra: list[str] | None = None,
                 prefix: list[str] | None = None) -> None:
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
                "--heartbeat-seconds", str(heartbeat_seconds), *(extra or [])]
        super().__init__(argv, workdir / "nm.log")
        self._channel = channel(self.address)
        self.stub = nm_grpc.NodeManagerServiceStub(self._channel)

    def stop(self, timeout: float = 10.0) -> None:
        self._channel.close()
        super().stop(timeout)
        self._pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        super().kill()
        self.stop()
