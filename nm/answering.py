"""Which instances a start call is being made for now, shared by the servicer
(which notes them) and the reporter (which holds back what their answers tell)."""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator


class Answering:
    """Instance ids a start (or resume) call is being made for now.  The VM it
    starts is told to the CM by the call's answer, so the report of it need not
    go at once (`Reporter.observe`): when a cluster fills, that report was most
    of the CM's ReportInstances calls, each repeating what an answer had said."""

    def __init__(self) -> None:
        self._ids: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def start(self, instance_id: int) -> Iterator[None]:
        with self._lock:
            self._ids[instance_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._ids[instance_id] -= 1
                if self._ids[instance_id] <= 0:
                    del self._ids[instance_id]

    def __contains__(self, instance_id: int) -> bool:
        with self._lock:
            return instance_id in self._ids
