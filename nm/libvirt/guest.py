"""libvirt's domain states and lifecycle events mapped to Tashi's instance states.

Plain integers in, plain integers out (the libvirt constants are spelled here
so this module needs no libvirt import and is tested on its own).
"""

from __future__ import annotations

from tashi.nm.model import EXITED, PAUSED, RUNNING, SUSPENDED, UNSPECIFIED

# virDomainState
DOM_NOSTATE, DOM_RUNNING, DOM_BLOCKED, DOM_PAUSED = 0, 1, 2, 3
DOM_SHUTDOWN, DOM_SHUTOFF, DOM_CRASHED, DOM_PMSUSPENDED = 4, 5, 6, 7

# virDomainEventType
EV_DEFINED, EV_UNDEFINED, EV_STARTED, EV_SUSPENDED, EV_RESUMED = 0, 1, 2, 3, 4
EV_STOPPED, EV_SHUTDOWN, EV_PMSUSPENDED, EV_CRASHED = 5, 6, 7, 8

# details
STARTED_MIGRATED = 1
SUSPENDED_MIGRATED = 1
SUSPENDED_POSTCOPY = 7
STOPPED_MIGRATED = 3
STOPPED_SAVED = 4

_STATE = {
    DOM_NOSTATE: RUNNING,
    DOM_RUNNING: RUNNING,
    DOM_BLOCKED: RUNNING,
    DOM_SHUTDOWN: RUNNING,  # still running while the guest powers off
    DOM_PAUSED: PAUSED,
    DOM_PMSUSPENDED: PAUSED,
    DOM_SHUTOFF: EXITED,
    DOM_CRASHED: EXITED,
}


def state_of(libvirt_state: int) -> int:
    """Tashi state of a domain libvirt reports in `libvirt_state`."""
    return _STATE.get(libvirt_state, UNSPECIFIED)


def state_after_event(event: int, detail: int) -> int:
    """The state a lifecycle event leaves the VM in, or UNSPECIFIED when the event
    says nothing the CM should hear (definitions, the steps of a migration, the
    guest's own shutdown notice that a STOPPED event follows)."""
    if event == EV_STARTED:
        return UNSPECIFIED if detail == STARTED_MIGRATED else RUNNING
    if event == EV_RESUMED:
        return RUNNING
    if event == EV_SUSPENDED:
        return UNSPECIFIED if detail in (SUSPENDED_MIGRATED, SUSPENDED_POSTCOPY) else PAUSED
    if event == EV_PMSUSPENDED:
        return PAUSED
    if event == EV_STOPPED:
        if detail == STOPPED_SAVED:
            return SUSPENDED
        if detail == STOPPED_MIGRATED:
            return UNSPECIFIED
        return EXITED
    return UNSPECIFIED
