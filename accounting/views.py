"""The ledger's last known view of one instance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tashi.accounting.phases import Phase
from tashi.v1 import resources_pb2 as pb


@dataclass(frozen=True, slots=True)
class InstanceView:
    instance_id: int
    owner: str
    name: str
    state: int
    phase: Phase
    host_id: int
    host_name: str
    cores: int
    memory_mib: int
    # The billed interval open for it, if any, and when that interval began.
    interval_id: int | None
    interval_start_ns: int
    # The interval ended when the instance was orphaned, reopened if its
    # node manager reports it again in the same phase on the same host.
    orphan_interval_id: int | None
    # Sequence of the last event (or relist) that set this view.
    last_seq: int
    deleted: bool = False

    def billing_key(self) -> tuple[int, int, int, int, str]:
        """A change of any of these closes the billed interval and opens another."""
        return (int(self.phase), self.host_id, self.cores, self.memory_mib, self.owner)

    def differs_from(self, inst: pb.Instance) -> bool:
        return (self.state != inst.status.state or self.host_id != inst.status.host_id
                or self.cores != inst.spec.cores or self.memory_mib != inst.spec.memory_mib
                or self.owner != inst.owner)

    def to_pb(self) -> pb.Instance:
        return pb.Instance(
            id=self.instance_id, owner=self.owner, name=self.name,
            spec=pb.InstanceSpec(cores=self.cores, memory_mib=self.memory_mib),
            status=pb.InstanceStatus(state=self.state,  # type: ignore[arg-type]
                                     host_id=self.host_id, host_name=self.host_name))

    def as_row(self) -> tuple[object, ...]:
        return (self.instance_id, self.owner, self.name, self.state, int(self.phase),
                self.host_id, self.host_name, self.cores, self.memory_mib, self.interval_id,
                self.interval_start_ns, self.orphan_interval_id, self.last_seq,
                int(self.deleted))

    @staticmethod
    def from_row(row: Sequence[Any]) -> InstanceView:
        (iid, owner, name, state, phase, host_id, host_name, cores, mem, interval_id,
         interval_start, orphan_interval_id, last_seq, deleted) = row
        return InstanceView(iid, owner, name, state, Phase(phase), host_id, host_name, cores,
                            mem, interval_id, interval_start, orphan_interval_id, last_seq,
                            bool(deleted))


VIEW_COLUMNS = ("instance_id, owner, name, state, phase, host_id, host_name, cores, memory_mib, "
                "interval_id, interval_start_ns, orphan_interval_id, last_seq, deleted")
