"""The one fit rule: what an instance's state charges to hosts, and whether a
size fits what a host has free.

The scheduler's filters, the CM's re-check at activation and migration, the
node manager's check before it starts or receives a VM, and the CLI's
getSlots all ask these functions, so they can never disagree.  Pure
functions over plain numbers and wire enums; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from tashi.v1 import resources_pb2 as pb

# States in which an instance holds no host, so charges nothing anywhere.
HOSTLESS = frozenset({pb.INSTANCE_STATE_UNSPECIFIED, pb.INSTANCE_STATE_PENDING,
                      pb.INSTANCE_STATE_HELD, pb.INSTANCE_STATE_SUSPENDED,
                      pb.INSTANCE_STATE_EXITED})
# States in which a migration target's capacity is held as well.
MIGRATING = frozenset({pb.INSTANCE_STATE_MIGRATE_PREP, pb.INSTANCE_STATE_MIGRATE_TRANS})


def charged_hosts(state: int, host_id: int, migration_target_host_id: int = 0) -> tuple[int, ...]:
    """Hosts whose capacity an instance in `state` holds: its host unless the
    state is host-less, plus the migration target while it migrates."""
    hosts: tuple[int, ...] = ()
    if host_id and state not in HOSTLESS:
        hosts = (host_id,)
    if state in MIGRATING and migration_target_host_id and migration_target_host_id != host_id:
        hosts += (migration_target_host_id,)
    return hosts


@dataclass(frozen=True, slots=True)
class Shortfall:
    """The first resource a size lacks on a host (Ganeti's FailCPU / FailMem)."""

    resource: str  # "cores" or "memory"
    needed: int
    free: int

    def __str__(self) -> str:
        if self.resource == "cores":
            return f"{self.free} free cores, {self.needed} needed"
        return f"{self.free} MiB free, {self.needed} MiB needed"


def shortfall(free_cores: int, free_memory_mib: int, cores: int,
              memory_mib: int) -> Shortfall | None:
    """None when `cores` and `memory_mib` fit in what is free, else what is short."""
    if cores > free_cores:
        return Shortfall("cores", cores, free_cores)
    if memory_mib > free_memory_mib:
        return Shortfall("memory", memory_mib, free_memory_mib)
    return None


def slots(free_cores: int, free_memory_mib: int, cores: int, memory_mib: int) -> int:
    """How many more instances of one size fit in what is free."""
    if cores < 1 or memory_mib < 1:
        raise ValueError("a size has at least one core and one MiB")
    return max(0, min(free_cores // cores, free_memory_mib // memory_mib))
