"""An interactive session on a domain's serial port: libvirt's console stream.

The domain's serial is a pty (domain_xml.build); `virDomainOpenConsole` joins
it to a stream over the node manager's libvirt connection.  The stream is
non-blocking and driven by libvirt's event loop (tashi.nm.libvirt.events):
its callback only wakes the reader and stops listening; the reader drains
the stream, then listens again.  So nothing reads faster than the session's
consumer takes the output, and an idle session costs no polling.

`VIR_DOMAIN_CONSOLE_SAFE` makes libvirt refuse a second session on the same
console (ours or anybody's, `virsh console` included) rather than break the
first: one interactive session per VM.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import libvirt

from tashi.nm.console import CHUNK, ConsoleSession
from tashi.nm.errors import FailedPrecondition, NotFound
from tashi.nm.libvirt.records import is_no_domain, lv_message

log = logging.getLogger(__name__)

EVENTS = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
          | libvirt.VIR_STREAM_EVENT_HANGUP)
SEND_RETRY_SECONDS = 0.01  # the stream's buffer was full: try again after this


class LibvirtConsole(ConsoleSession):
    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                 instance_id: int) -> None:
        self.instance_id = instance_id
        self._lock = threading.Lock()  # reading and closing the stream
        self._wake = threading.Event()
        self._closed = False
        self._ended = False
        self._stream = stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_SAFE)
            stream.eventAddCallback(EVENTS, self._on_event, None)
        except libvirt.libvirtError as exc:
            _quietly(stream.abort)
            if is_no_domain(exc):
                raise NotFound(f"instance {instance_id} is not running on this host") from None
            if "active console session" in lv_message(exc).lower():
                raise FailedPrecondition(
                    f"instance {instance_id}'s console is already attached elsewhere; "
                    "one interactive session at a time") from None
            raise FailedPrecondition(f"cannot open the console of instance {instance_id}: "
                                     f"{lv_message(exc)}") from None

    def _on_event(self, stream: libvirt.virStream, _events: int, _opaque: Any) -> None:
        # libvirt's event thread: stop listening (the event repeats while data waits)
        # and let the reader drain the stream.
        _quietly(lambda: stream.eventUpdateCallback(0))
        self._wake.set()

    def recv(self, timeout: float) -> bytes | None:
        if self._ended or self._closed:
            return None
        if not self._wake.wait(timeout):
            return b""
        self._wake.clear()
        chunks: list[bytes] = []
        size = 0
        with self._lock:
            if self._closed:
                return None
            while size < CHUNK:
                try:
                    data = self._stream.recv(CHUNK)
                except libvirt.libvirtError as exc:
                    log.debug("console of instance %d: %s", self.instance_id, lv_message(exc))
                    self._ended = True
                    break
                if data == -2:  # nothing more for now
                    break
                if not data:  # the end: the domain stopped, or libvirt closed it
                    self._ended = True
                    break
                chunks.append(data)
                size += len(data)
            if not self._ended:
                try:
                    self._stream.eventUpdateCallback(EVENTS)
                except libvirt.libvirtError:
                    self._ended = True
        if chunks:
            return b"".join(chunks)
        return None if self._ended else b""

    def send(self, data: bytes) -> bool:
        while data:
            if self._closed or self._ended:
                return False
            try:
                sent = self._stream.send(data)
            except libvirt.libvirtError:
                return False
            if sent == -2:
                time.sleep(SEND_RETRY_SECONDS)
                continue
            data = data[sent:]
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _quietly(self._stream.eventRemoveCallback)
            _quietly(self._stream.abort)
        self._wake.set()


def _quietly(action: Any) -> None:
    try:
        action()
    except libvirt.libvirtError:
        pass
