"""Which instance states are billed, and as what.

A VM's execution only changes when its node manager confirms it: the
stable states Running and Paused start a billed phase, and the other stable
states (Pending, Suspended, Held, Exited, Orphaned) end it.  A transitional
state (Pausing, Destroying, MigrateTrans ...) keeps the phase the instance
was in, because the VM keeps doing what it did until the change lands: a
VM being destroyed while paused is billed as paused until it is gone.

Orphaned (its host was lost, or the cluster manager restarted) is settled
by what follows: the ledger ends the billed interval when the instance is
orphaned, and if its node manager then reports it in the same phase on the
same host, the interval is reopened as if never interrupted (the VM ran
all along, as after a CM restart); any other outcome leaves it ended at
the moment the host was lost.
"""

from __future__ import annotations

from enum import IntEnum

from tashi.v1 import resources_pb2 as pb


class Phase(IntEnum):
    NONE = 0
    RUNNING = 1
    PAUSED = 2


S = pb

_STABLE: dict[int, Phase] = {
    S.INSTANCE_STATE_RUNNING: Phase.RUNNING,
    S.INSTANCE_STATE_PAUSED: Phase.PAUSED,
    S.INSTANCE_STATE_PENDING: Phase.NONE,
    S.INSTANCE_STATE_SUSPENDED: Phase.NONE,
    S.INSTANCE_STATE_HELD: Phase.NONE,
    S.INSTANCE_STATE_EXITED: Phase.NONE,
    S.INSTANCE_STATE_ORPHANED: Phase.NONE,
    S.INSTANCE_STATE_UNSPECIFIED: Phase.NONE,
}

# What a transitional state most likely means when the ledger has no prior
# phase for the instance (first seen after a gap or a relist).
_TRANSITIONAL_GUESS: dict[int, Phase] = {
    S.INSTANCE_STATE_ACTIVATING: Phase.NONE,
    S.INSTANCE_STATE_RESUMING: Phase.NONE,
    S.INSTANCE_STATE_PAUSING: Phase.RUNNING,
    S.INSTANCE_STATE_UNPAUSING: Phase.PAUSED,
    S.INSTANCE_STATE_SUSPENDING: Phase.RUNNING,
    S.INSTANCE_STATE_MIGRATE_PREP: Phase.RUNNING,
    S.INSTANCE_STATE_MIGRATE_TRANS: Phase.RUNNING,
    S.INSTANCE_STATE_SHUTTING_DOWN: Phase.RUNNING,
    S.INSTANCE_STATE_DESTROYING: Phase.RUNNING,
}


def phase_of(state: int, previous: Phase | None) -> Phase:
    """The billed phase after moving to `state`; `previous` is None when unknown."""
    stable = _STABLE.get(state)
    if stable is not None:
        return stable
    if previous is not None:
        return previous
    return _TRANSITIONAL_GUESS.get(state, Phase.NONE)


def is_stable(state: int) -> bool:
    """A state the node manager confirmed (or the cluster manager settled)."""
    return state in _STABLE
