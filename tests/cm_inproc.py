"""An in-process cluster manager on a loopback port, for fast RPC tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tashi.cm.config import CMConfig
from tashi.cm.main import ClusterManager
from tashi.runtime.client import ClusterClient
from tashi.v1 import node_registry_pb2 as nr
from tashi.v1 import resources_pb2 as pb


def vm(name: str, cores: int = 1, memory_mib: int = 64, **spec: object) -> pb.Instance:
    """What a user sends to create an instance: a name and a spec."""
    return pb.Instance(name=name, spec=pb.InstanceSpec(  # type: ignore[arg-type]
        cores=cores, memory_mib=memory_mib, **spec))


class InProcCM:
    def __init__(self, tmp_path: Path, **settings: object) -> None:
        images = tmp_path / "images"
        images.mkdir(exist_ok=True)
        (images / "base.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 60)
        settings.setdefault("images", str(images))
        self.cfg = CMConfig(listen="127.0.0.1:0", db=str(tmp_path / "cm.db"), **settings)  # type: ignore[arg-type]
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


def register_host(client: ClusterClient, name: str, cores: int = 8, memory_mib: int = 16384,
                  nm_address: str = "", add: bool = True,
                  instances: list[nr.InstanceReport] | None = None) -> nr.RegisterHostResponse:
    """Add a host and register it as its node manager would (synthetic capacity)."""
    if add:
        client.create_host(name)
    return client.call(client.registry.RegisterHost, nr.RegisterHostRequest(
        name=name, cores=cores, memory_mib=memory_mib, version="0.1.0", nm_address=nm_address,
        instances=instances or []))
