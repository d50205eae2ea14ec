"""Plain, immutable values the placement policy works on.

The policy never sees protobuf or gRPC: `convert.py` turns the cluster
manager's resources into these values, and everything under `filters`,
`scorers`, `index` and `placer` is a pure function of them (as Ganeti's
htools loaders do).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class HostState(enum.Enum):
    """Administrative state of a host, as Tashi names it."""

    UNKNOWN = "Unknown"
    NORMAL = "Normal"
    DRAINED = "Drained"
    VERSION_MISMATCH = "VersionMismatch"


class VmState(enum.Enum):
    """The instance states the scheduler distinguishes; everything else is OTHER."""

    PENDING = "Pending"
    HELD = "Held"
    ACTIVATING = "Activating"
    OTHER = "Other"


class Policy(enum.Enum):
    """Spread: fewest VMs, then most free.  Dense pack: least free room that still fits."""

    SPREAD = "spread"
    DENSE_PACK = "densePack"


@dataclass(frozen=True, slots=True)
class Hints:
    """Placement hints of one VM, parsed from its `hints` map (see hints.py)."""

    target_host: str = ""
    allow_elsewhere: bool = False
    # None: the scheduler's default policy.
    dense_pack: bool | None = None
    # VMs with the same (owner, group) key go to distinct hosts; "" means none.
    anti_affinity_group: str = ""


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as the scheduler sees it: capacity from the CM, usage from instances."""

    id: int
    name: str
    up: bool = True
    state: HostState = HostState.NORMAL
    cores: int = 0
    memory_mib: int = 0
    used_cores: int = 0
    used_memory_mib: int = 0
    instance_count: int = 0
    # User names the host is reserved for; empty: anyone.
    reserved_for: frozenset[str] = frozenset()
    # Whether the node manager reports network status at all; one that does
    # not is not checked for networks (the CM's rule too).
    reports_networks: bool = False
    # Networks the host's node manager reports ready.
    ready_networks: frozenset[int] = frozenset()
    # Why each not-ready network is not ready, for the Held reason.
    network_problems: tuple[tuple[int, str], ...] = ()

    @property
    def free_cores(self) -> int:
        return self.cores - self.used_cores

    @property
    def free_memory_mib(self) -> int:
        return self.memory_mib - self.used_memory_mib

    @property
    def schedulable(self) -> bool:
        """Up and Normal: the only hosts the capacity index holds."""
        return self.up and self.state is HostState.NORMAL


@dataclass(frozen=True, slots=True)
class VmSpec:
    """One instance: what it asks for and where it is."""

    id: int
    name: str = ""
    owner: str = ""
    cores: int = 1
    memory_mib: int = 1
    state: VmState = VmState.PENDING
    # 0: not assigned to any host.
    host_id: int = 0
    # Hosts whose capacity the instance holds, as the CM computed them with the one
    # fit rule (runtime/fit.py): its host unless its state holds none, plus a
    # migration target.
    charged_hosts: tuple[int, ...] = ()
    # Network id of each NIC, by NIC index.
    networks: tuple[int, ...] = ()
    # Address of each NIC, by NIC index ("" when none yet).
    nic_ips: tuple[str, ...] = ()
    # Image URIs of all the VM's disks, and of those it writes in place.
    disks: tuple[str, ...] = ()
    persistent_disks: tuple[str, ...] = ()
    group_name: str = ""
    hints: Hints = field(default_factory=Hints)
    # Why the instance is in its state (the CM's text), e.g. a failed start.
    state_reason: str = ""
    # A suspended VM being resumed: the host holding its saved state, where it
    # must resume (0: none).
    resume_host_id: int = 0

    @property
    def anti_affinity_key(self) -> tuple[str, str] | None:
        """Groups are per owner, so one user's group name never blocks another's VMs."""
        if not self.hints.anti_affinity_group:
            return None
        return (self.owner, self.hints.anti_affinity_group)


@dataclass(frozen=True, slots=True)
class Chosen:
    """A placement decision: the VM goes to this host."""

    vm_id: int
    host_id: int
    host_name: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The VM fits nowhere (or not on its target); `reason` becomes the Held reason."""

    vm_id: int
    reason: str


Decision = Chosen | Refused
