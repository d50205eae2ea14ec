"""Instance states and the moves between them (Tashi's rules), in one table.

`TRANSITIONS` lists every from -> to move any cause may make: user actions,
placement, node manager answers and reports, the liveness monitor, a CM
restart.  The cluster checks every instance write against it (`check`, from
`Txn.put`), so a path that tries a move not listed here fails loudly instead
of corrupting the cluster's view.  `settle` derives the status fields that
follow from the state, so no writer has to remember them.
"""

from __future__ import annotations

from tashi.runtime.fit import HOSTLESS, MIGRATING, charged_hosts
from tashi.runtime.names import instance_state_name
from tashi.v1 import resources_pb2 as pb

S = pb
State = pb.InstanceState

# action -> (states it may start from, transitional state it enters)
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

# Hosted states the liveness monitor and a CM restart turn Orphaned: the host
# went silent, so nobody knows what became of them until its NM reports.  Not
# Activating: the CM's own start call settles that (Running, or Held with the
# reason), and a CM restart sends it back to Pending.
ORPHANABLE = frozenset({
    S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSING,
    S.INSTANCE_STATE_PAUSED, S.INSTANCE_STATE_UNPAUSING, S.INSTANCE_STATE_SUSPENDING,
    S.INSTANCE_STATE_RESUMING, S.INSTANCE_STATE_MIGRATE_PREP, S.INSTANCE_STATE_MIGRATE_TRANS,
    S.INSTANCE_STATE_SHUTTING_DOWN})

# States of an instance in which another host's copy of its VM is not ended:
# either copy may be the one that runs (a migration, or nobody knows).
SETTLING = MIGRATING | {S.INSTANCE_STATE_ORPHANED}


def stray_copy(status: pb.InstanceStatus, host_id: int) -> bool:
    """Whether a VM of this instance on host `host_id` is a copy to end: the
    instance is settled on another host (not SETTLING; one waiting for a host is
    found running on `host_id` by that host's report instead)."""
    return status.host_id not in (0, host_id) and status.state not in SETTLING

# States an instance may be born in: created by a user, or adopted from what an
# NM runs that the CM did not know.
BIRTH = frozenset({S.INSTANCE_STATE_PENDING, S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED})


def _table() -> dict[State, frozenset[State]]:
    moves: dict[State, set[State]] = {s: {s} for s in State.values()}  # a state may be rewritten

    def add(froms: frozenset[State] | set[State], to: State) -> None:
        for f in froms:
            moves[f].add(to)

    for froms, entering in USER_ACTIONS.values():  # users
        add(froms, entering)
    add({S.INSTANCE_STATE_RUNNING, S.INSTANCE_STATE_PAUSED, S.INSTANCE_STATE_PAUSING,
         S.INSTANCE_STATE_UNPAUSING, S.INSTANCE_STATE_SUSPENDING, S.INSTANCE_STATE_RESUMING,
         S.INSTANCE_STATE_ACTIVATING, S.INSTANCE_STATE_MIGRATE_PREP,
         S.INSTANCE_STATE_MIGRATE_TRANS, S.INSTANCE_STATE_SHUTTING_DOWN,
         S.INSTANCE_STATE_ORPHANED}, S.INSTANCE_STATE_DESTROYING)  # destroy of a hosted one
    placeable = {S.INSTANCE_STATE_PENDING, S.INSTANCE_STATE_HELD}
    add(placeable, S.INSTANCE_STATE_ACTIVATING)  # the scheduler places
    add(placeable, S.INSTANCE_STATE_HELD)  # ... or holds with a reason
    # Node manager answers: done, or back where the call started.
    add({S.INSTANCE_STATE_ACTIVATING}, S.INSTANCE_STATE_RUNNING)
    add({S.INSTANCE_STATE_ACTIVATING}, S.INSTANCE_STATE_PAUSED)
    add({S.INSTANCE_STATE_ACTIVATING}, S.INSTANCE_STATE_HELD)
    add({S.INSTANCE_STATE_PAUSING}, S.INSTANCE_STATE_PAUSED)
    add({S.INSTANCE_STATE_PAUSING}, S.INSTANCE_STATE_RUNNING)
    add({S.INSTANCE_STATE_UNPAUSING}, S.INSTANCE_STATE_RUNNING)
    add({S.INSTANCE_STATE_UNPAUSING}, S.INSTANCE_STATE_PAUSED)
    add({S.INSTANCE_STATE_SUSPENDING}, S.INSTANCE_STATE_SUSPENDED)
    add({S.INSTANCE_STATE_SUSPENDING}, S.INSTANCE_STATE_RUNNING)
    add({S.INSTANCE_STATE_SHUTTING_DOWN}, S.INSTANCE_STATE_RUNNING)
    add({S.INSTANCE_STATE_SHUTTING_DOWN}, S.INSTANCE_STATE_PAUSED)
    add({S.INSTANCE_STATE_MIGRATE_PREP}, S.INSTANCE_STATE_MIGRATE_TRANS)
    add(MIGRATING, S.INSTANCE_STATE_RUNNING)
    # What node managers report they see.
    for to, froms in REPORT_TARGETS.items():
        add(froms, to)
    add(placeable, S.INSTANCE_STATE_RUNNING)  # found running on some host
    # The liveness monitor and a CM restart.
    add(ORPHANABLE, S.INSTANCE_STATE_ORPHANED)
    add({S.INSTANCE_STATE_ACTIVATING}, S.INSTANCE_STATE_PENDING)
    # The end: destroyed, exited, or gone from its host's report; never while it
    # migrates, since then either host may be running it.
    add(set(State.values()) - MIGRATING, S.INSTANCE_STATE_EXITED)
    return {f: frozenset(t) for f, t in moves.items()}


TRANSITIONS: dict[State, frozenset[State]] = _table()


class IllegalTransition(RuntimeError):
    """A code path tried a move the table does not allow: a bug, never a user error."""


def check(old: int | None, new: int, iid: int = 0) -> None:
    """Raise IllegalTransition unless `old -> new` is in the table (None: a new instance)."""
    if old is None:
        if new not in BIRTH:
            raise IllegalTransition(f"instance {iid} cannot be born {instance_state_name(new)}")
        return
    if new not in TRANSITIONS.get(State.ValueType(old), frozenset()):
        raise IllegalTransition(f"instance {iid}: {instance_state_name(old)} -> "
                                f"{instance_state_name(new)} is not an allowed move")


def settle(status: pb.InstanceStatus) -> None:
    """Make the status fields that follow from the state agree with it."""
    state = status.state
    if state in HOSTLESS and state != S.INSTANCE_STATE_EXITED:  # a deleted one says where it was
        status.host_id = 0
        status.host_name = ""
        status.vm_id = ""
    if state not in MIGRATING:
        status.migration_source_host_id = 0
        status.migration_target_host_id = 0
    if state != S.INSTANCE_STATE_SHUTTING_DOWN:
        status.prior_state = S.INSTANCE_STATE_UNSPECIFIED
    if state not in KEEPS_SUSPEND_IMAGE:
        status.suspend_image = ""
        status.suspend_host_id = 0
    del status.charged_host_ids[:]
    status.charged_host_ids.extend(
        charged_hosts(state, status.host_id, status.migration_target_host_id))


# States in which a saved memory image is still the instance's to resume from.
KEEPS_SUSPEND_IMAGE = frozenset({S.INSTANCE_STATE_SUSPENDED, S.INSTANCE_STATE_PENDING,
                                 S.INSTANCE_STATE_HELD, S.INSTANCE_STATE_ACTIVATING,
                                 S.INSTANCE_STATE_RESUMING, S.INSTANCE_STATE_EXITED})


def not_allowed(action: str, state: int) -> str:
    allowed = USER_ACTIONS[action][0]
    names = " or ".join(sorted(instance_state_name(s) for s in allowed))
    return f"cannot {action} an instance that is {instance_state_name(state)}; it must be {names}"
