"""Human names for wire enums, as Tashi users know them (Running, ShuttingDown ...)."""

from __future__ import annotations

from typing import cast

from tashi.v1 import resources_pb2 as pb

INSTANCE_STATE_NAMES: dict[int, str] = {
    pb.INSTANCE_STATE_UNSPECIFIED: "Unspecified",
    pb.INSTANCE_STATE_PENDING: "Pending",
    pb.INSTANCE_STATE_ACTIVATING: "Activating",
    pb.INSTANCE_STATE_RUNNING: "Running",
    pb.INSTANCE_STATE_PAUSING: "Pausing",
    pb.INSTANCE_STATE_PAUSED: "Paused",
    pb.INSTANCE_STATE_UNPAUSING: "Unpausing",
    pb.INSTANCE_STATE_SUSPENDING: "Suspending",
    pb.INSTANCE_STATE_SUSPENDED: "Suspended",
    pb.INSTANCE_STATE_RESUMING: "Resuming",
    pb.INSTANCE_STATE_MIGRATE_PREP: "MigratePrep",
    pb.INSTANCE_STATE_MIGRATE_TRANS: "MigrateTrans",
    pb.INSTANCE_STATE_SHUTTING_DOWN: "ShuttingDown",
    pb.INSTANCE_STATE_DESTROYING: "Destroying",
    pb.INSTANCE_STATE_ORPHANED: "Orphaned",
    pb.INSTANCE_STATE_HELD: "Held",
    pb.INSTANCE_STATE_EXITED: "Exited",
}
INSTANCE_STATES_BY_NAME = {v.lower(): k for k, v in INSTANCE_STATE_NAMES.items()}

HOST_STATE_NAMES: dict[int, str] = {
    pb.HOST_STATE_UNSPECIFIED: "Unspecified",
    pb.HOST_STATE_NORMAL: "Normal",
    pb.HOST_STATE_DRAINED: "Drained",
    pb.HOST_STATE_VERSION_MISMATCH: "VersionMismatch",
}
HOST_STATES_BY_NAME = {v.lower(): k for k, v in HOST_STATE_NAMES.items()}

NETWORK_KIND_NAMES: dict[int, str] = {
    pb.NETWORK_KIND_UNSPECIFIED: "unspecified",
    pb.NETWORK_KIND_VLAN: "vlan",
    pb.NETWORK_KIND_VXLAN: "vxlan",
    pb.NETWORK_KIND_FLAT: "flat",
}


def as_instance_state(value: int) -> pb.InstanceState:
    """A state held as a plain int (the same numbers) typed as the wire enum."""
    return cast(pb.InstanceState, value)


def as_host_state(value: int) -> pb.HostState:
    return cast(pb.HostState, value)


def instance_state_name(state: int) -> str:
    return INSTANCE_STATE_NAMES.get(state, str(state))


def host_state_name(state: int) -> str:
    return HOST_STATE_NAMES.get(state, str(state))
