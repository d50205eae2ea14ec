"""libvirt states and lifecycle events as Tashi states; the numbers are libvirt's."""

from __future__ import annotations

import libvirt

from tashi.nm.libvirt import guest
from tashi.nm.model import EXITED, PAUSED, RUNNING, SUSPENDED, UNSPECIFIED


def test_our_constants_are_libvirts() -> None:
    assert guest.DOM_PAUSED == libvirt.VIR_DOMAIN_PAUSED
    assert guest.DOM_SHUTOFF == libvirt.VIR_DOMAIN_SHUTOFF
    assert guest.DOM_PMSUSPENDED == libvirt.VIR_DOMAIN_PMSUSPENDED
    assert guest.EV_STOPPED == libvirt.VIR_DOMAIN_EVENT_STOPPED
    assert guest.EV_SUSPENDED == libvirt.VIR_DOMAIN_EVENT_SUSPENDED
    assert guest.STOPPED_SAVED == libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED
    assert guest.STOPPED_MIGRATED == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED
    assert guest.STARTED_MIGRATED == libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED
    assert guest.SUSPENDED_MIGRATED == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED


def test_states() -> None:
    assert guest.state_of(libvirt.VIR_DOMAIN_RUNNING) == RUNNING
    assert guest.state_of(libvirt.VIR_DOMAIN_BLOCKED) == RUNNING
    assert guest.state_of(libvirt.VIR_DOMAIN_SHUTDOWN) == RUNNING
    assert guest.state_of(libvirt.VIR_DOMAIN_PAUSED) == PAUSED
    assert guest.state_of(libvirt.VIR_DOMAIN_SHUTOFF) == EXITED
    assert guest.state_of(libvirt.VIR_DOMAIN_CRASHED) == EXITED


def test_events() -> None:
    ev = guest.state_after_event
    assert ev(libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED) == RUNNING
    assert ev(libvirt.VIR_DOMAIN_EVENT_STARTED,
              libvirt.VIR_DOMAIN_EVENT_STARTED_RESTORED) == RUNNING
    assert ev(libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
              libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED) == PAUSED
    assert ev(libvirt.VIR_DOMAIN_EVENT_RESUMED,
              libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED) == RUNNING
    assert ev(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED) == SUSPENDED
    for detail in (libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN,
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED):
        assert ev(libvirt.VIR_DOMAIN_EVENT_STOPPED, detail) == EXITED
    # the steps of a migration and definitions say nothing to the CM
    assert ev(libvirt.VIR_DOMAIN_EVENT_STOPPED,
              libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED) == UNSPECIFIED
    assert ev(libvirt.VIR_DOMAIN_EVENT_STARTED,
              libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED) == UNSPECIFIED
    assert ev(libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
              libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED) == UNSPECIFIED
    assert ev(libvirt.VIR_DOMAIN_EVENT_DEFINED, 0) == UNSPECIFIED
    assert ev(libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, 0) == UNSPECIFIED
