"""Per-network readiness on one host, as the node manager reports it to the CM."""

from __future__ import annotations

from dataclasses import dataclass

from tashi.v1 import resources_pb2 as pb


@dataclass(frozen=True)
class NetworkStatus:
    network_id: int
    ready: bool
    reason: str = ""
    bridge: str = ""
    """Bridge a VM's tap joins; empty when the network is not ready."""

    def to_proto(self) -> pb.HostNetworkStatus:
        return pb.HostNetworkStatus(
            network_id=self.network_id, ready=self.ready, reason=self.reason
        )


@dataclass(frozen=True)
class ConvergeResult:
    """Outcome of one pass: status per desired network, and what was changed."""

    statuses: tuple[NetworkStatus, ...]
    changes: tuple[str, ...]

    def status(self, network_id: int) -> NetworkStatus:
        for s in self.statuses:
            if s.network_id == network_id:
                return s
        raise KeyError(network_id)
