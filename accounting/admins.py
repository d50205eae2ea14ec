"""Who is an admin for accounting: the cluster manager's admins, one list.

The CM's users carry `admin` (from the CM's config); accounting asks for
them and keeps the answer for a few seconds.  While the CM cannot be
asked, the last answer stands; before any answer, nobody is an admin
(closed, not open).
"""

from __future__ import annotations

import logging
import threading
import time

from tashi.runtime.client import ClusterClient, TashiError
from tashi.runtime.tls import Tls

log = logging.getLogger(__name__)


class CmAdmins:
    def __init__(self, cm_address: str, user: str, tls: Tls | None = None,
                 ttl_seconds: float = 10.0) -> None:
        self.cm_address = cm_address
        self.user = user
        self.tls = tls
        self.ttl = ttl_seconds
        self._names: frozenset[str] = frozenset()
        self._fetched = -1e9
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        with self._lock:
            if time.monotonic() - self._fetched > self.ttl:
                self._refresh()
            return name in self._names

    def _refresh(self) -> None:
        try:
            with ClusterClient(self.cm_address, self.user, timeout=5, tls=self.tls) as client:
                users = client.list_users()
        except TashiError as exc:
            log.warning("cannot ask the cluster manager for its admins (%s); keeping %d known",
                        exc, len(self._names))
            self._fetched = time.monotonic() - self.ttl + 1.0  # try again in a second
            return
        self._names = frozenset(u.name for u in users if u.admin)
        self._fetched = time.monotonic()
