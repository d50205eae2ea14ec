"""The libvirt connection of this host and the facts it gives about the host.

The connection is reopened when libvirtd goes away (restart, crash), and the
owner is told through `on_reconnect` so it can register its event callback
again and resync what it missed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import libvirt

from tashi.nm.errors import Unavailable
from tashi.nm.libvirt.events import ensure_event_loop, silence_default_error_handler
from tashi.nm.model import HostFacts

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


def version_text(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class Host:
    def __init__(self, uri: str, on_reconnect: Callable[[libvirt.virConnect], None],
                 on_close: Callable[[], None] = lambda: None) -> None:
        self.uri = uri
        self._on_reconnect = on_reconnect
        self._on_close = on_close
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        silence_default_error_handler()
        ensure_event_loop()

    def conn(self) -> libvirt.virConnect:
        """A live connection, reopened if libvirtd went away."""
        with self._lock:
            conn = self._conn
            if conn is not None and conn.isAlive():
                return conn
            if conn is not None:
                log.warning("libvirt connection to %s lost; reopening", self.uri)
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise Unavailable(f"cannot connect to libvirt at {self.uri}: "
                                  f"{exc.get_error_message()}") from None
            if not self.uri.startswith("test:"):
                try:
                    conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
                except libvirt.libvirtError:
                    pass  # local drivers without keepalive
                try:  # libvirtd went away: reconnect now, not at the next call
                    conn.registerCloseCallback(lambda _c, _reason, _o: self._on_close(), None)
                except libvirt.libvirtError:
                    pass
            self._conn = conn
        self._on_reconnect(conn)
        return conn

    def facts(self) -> HostFacts:
        conn = self.conn()
        info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
        try:
            hv = f"{conn.getType()} {version_text(conn.getVersion())}"
        except libvirt.libvirtError:
            hv = conn.getType()
        live = conn.getType() != "Test"
        return HostFacts(cores=int(info[2]), memory_mib=int(info[1]),
                         hypervisor=f"{hv}, libvirt {version_text(conn.getLibVersion())}",
                         live_migration=live,
                         no_migration_reason="" if live else "libvirt's test driver cannot "
                                                             "migrate")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
