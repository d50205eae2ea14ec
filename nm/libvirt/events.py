"""libvirt's event loop: one thread running virEventRunDefaultImpl for the process.

libvirt delivers domain lifecycle events (and connection keepalives) only
while an event loop runs; the default implementation must be registered
before the first connection is opened.
"""

from __future__ import annotations

import logging
import threading

import libvirt

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _run() -> None:
    while True:
        try:
            if libvirt.virEventRunDefaultImpl() < 0:
                log.error("libvirt event loop iteration failed")
        except Exception:  # never let the loop die: every event would be lost
            log.exception("libvirt event loop")


def ensure_event_loop() -> None:
    """Register the default event implementation and start its thread (once)."""
    global _thread
    with _lock:
        if _thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        _thread = threading.Thread(target=_run, name="libvirt-events", daemon=True)
        _thread.start()


def silence_default_error_handler() -> None:
    """libvirt prints every error to stderr by default; ours are raised and logged."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
