"""Instance states and the transitions a user may ask for (Tashi's rules)."""

from __future__ import annotations

from tashi.runtime.names import instance_state_name
from tashi.v1 import resources_pb2 as pb

S = pb

# action -> (states it may start from, transitional state it enters)
State = pb.InstanceState

USER_ACTIONS: dict[str, tuple[frozenset[State], State]] = {
    "shutdown": (frozenset({S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED}),
                 S.INSTANCE_STATE_SHUTTING_DOWN),
    "pause": (frozenset({S.INSTANCE_STATE_RUNNING}), S.INSTANCE_STATE_PAUSING),
    "unpause": (frozenset({S.INSTANCE_STATE_PAUSED}), S.INSTANCE_STATE_UNPAUSING),
    "suspend": (frozenset({S.INSTANCE_STATE_RUNNING}), S.INSTANCE_STATE_SUSPENDING),
    "resume": (frozenset({S.INSTANCE_STATE_SUSPENDED}), S.INSTANCE_STATE_PENDING),
    "migrate": (frozenset({S.INSTANCE_STATE_RUNNING}), S.INSTANCE_STATE_MIGRATE_PREP),
}

# Destroy works from anywhere but an instance already going away.
DESTROY_AT_ONCE = frozenset({S.INSTANCE_STATE_PENDING, S.INSTANCE_STATE_HELD,
                             S.INSTANCE_STATE_SUSPENDED, S.INSTANCE_STATE_EXITED})

# States in which an instance holds no host.
HOSTLESS = frozenset({S.INSTANCE_STATE_PENDING, S.INSTANCE_STATE_HELD,
                      S.INSTANCE_STATE_SUSPENDED})

# States in which a node manager report of what libvirt sees is believed.
REPORT_TARGETS: dict[State, frozenset[State]] = {
    S.INSTANCE_STATE_RUNNING: frozenset({
        S.INSTANCE_STATE_ACTIVATING, S.INSTANCE_STATE_RESUMING, S.INSTANCE_STATE_UNPAUSING,
        S.INSTANCE_STATE_ORPHANED, S.INSTANCE_STATE_RUNNING,
        # Resumed outside the CM, or unpaused while the CM was away.
        S.INSTANCE_STATE_PAUSED}),
    S.INSTANCE_STATE_PAUSED: frozenset({
        S.INSTANCE_STATE_PAUSING, S.INSTANCE_STATE_ORPHANED, S.INSTANCE_STATE_RUNNING,
        S.INSTANCE_STATE_PAUSED}),
    S.INSTANCE_STATE_SUSPENDED: frozenset({
        S.INSTANCE_STATE_SUSPENDING, S.INSTANCE_STATE_ORPHANED}),
    S.INSTANCE_STATE_HELD: frozenset({S.INSTANCE_STATE_ACTIVATING, S.INSTANCE_STATE_RESUMING}),
}

# An EXITED report ends the instance unless it is between hosts or states.
EXIT_IGNORED = frozenset({S.INSTANCE_STATE_SUSPENDING, S.INSTANCE_STATE_SUSPENDED,
                          S.INSTANCE_STATE_MIGRATE_PREP, S.INSTANCE_STATE_MIGRATE_TRANS,
                          S.INSTANCE_STATE_PENDING, S.INSTANCE_STATE_HELD})


def not_allowed(action: str, state: int) -> str:
    allowed = USER_ACTIONS[action][0]
    names = " or ".join(sorted(instance_state_name(s) for s in allowed))
    return f"cannot {action} an instance that is {instance_state_name(state)}; it must be {names}"
